"""flashsrv: a static web server on the Flash AMPED architecture (uvloop + httptools + helpers)."""

__version__ = "0.1.0"
SERVER_NAME = f"flashsrv/{__version__}"
