#!/bin/bash -e
# check-header.sh <header> <package>: can the build host's gcc include <header>?

HEADER="$1"
PACKAGE="$2"

if echo | gcc -E -include "$HEADER" - >/dev/null 2>&1; then
	exit 0
fi

echo -e "\e[35m"
echo "Your $HEADER is missing"
echo "Please install it:"
echo "sudo apt-get install $PACKAGE"
echo -e "\e[0m"
exit 1
