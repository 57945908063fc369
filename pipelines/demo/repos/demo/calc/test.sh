#!/bin/sh
# The calculator's tests.
. ./calc.sh
got=$(add 2 3)
if [ "$got" != "5" ]; then
    echo "FAIL: add 2 3: got $got, want 5"
    exit 1
fi
echo "ok: add"
