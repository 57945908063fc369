#!/bin/sh
# Prints a greeting for the name given as $1.
greet() {
    echo "Helo, $1!"
}
