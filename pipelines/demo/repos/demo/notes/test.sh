#!/bin/sh
echo "ok: nothing to test"
