"""flashsrv.phases: every phase of a connection is bounded by a setting that exists."""

from __future__ import annotations

import dataclasses

import pytest

from flashsrv import phases
from flashsrv.config import OPTIONS_BY_NAME, Config
from flashsrv.phases import (
    ANSWERING,
    CLOSING,
    HEAD,
    IDLE,
    NEW,
    PHASE_TIMEOUTS,
    SENDING,
    phase_timeouts,
)

ALL_PHASES = [value for name, value in vars(phases).items()
              if name.isupper() and isinstance(value, str)]
CONFIG_FIELDS = {field.name: field for field in dataclasses.fields(Config)}


def test_phases_are_distinct_and_each_has_a_timeout_setting():
    assert len(set(ALL_PHASES)) == len(ALL_PHASES) == 6
    assert set(PHASE_TIMEOUTS) == set(ALL_PHASES)


@pytest.mark.parametrize("phase", ALL_PHASES)
def test_each_phase_setting_is_a_config_field_and_a_command_line_option(phase):
    setting = PHASE_TIMEOUTS[phase]
    assert setting in CONFIG_FIELDS
    assert isinstance(getattr(Config(), setting), float)
    assert setting.replace("_", "-") in OPTIONS_BY_NAME


def test_phase_timeouts_follow_the_settings():
    config = Config(request_start_timeout=1.5, keepalive_timeout=2.5, header_timeout=3.5,
                    send_timeout=4.5)
    assert phase_timeouts(config) == {NEW: 1.5, IDLE: 2.5, HEAD: 3.5, ANSWERING: 4.5,
                                      SENDING: 4.5, CLOSING: 4.5}


def test_a_new_connection_gets_less_time_than_a_begun_request_by_default():
    timeouts = phase_timeouts(Config())
    assert timeouts[NEW] < timeouts[HEAD]
    assert all(seconds > 0 for seconds in timeouts.values())
