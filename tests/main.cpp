// SPDX-License-Identifier: MIT
// The doctest runner, alone in its own file; every test executable links it.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
