#!/bin/sh
# Launcher of this pybroker instance, written by `pybroker create`.
# It runs the pybroker command of the Python that created the instance, with
# PYBROKER_INSTANCE naming this instance: `bin/pybroker run` starts the broker
# (etc/broker.xml, logs in log/). `exec` replaces this shell, so signals such as
# SIGTERM and Ctrl-C reach the broker itself.

PYBROKER_INSTANCE=${instance}
export PYBROKER_INSTANCE

exec ${python} -m pybroker "$$@"
