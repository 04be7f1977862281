document.documentElement.dataset.served = "flashsrv";
