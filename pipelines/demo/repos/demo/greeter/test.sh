#!/bin/sh
# The greeter's tests.
. ./greet.sh
got=$(greet world)
if [ "$got" != "Hello, world!" ]; then
    echo "FAIL: greet world: got '$got', want 'Hello, world!'"
    exit 1
fi
echo "ok: greet"
