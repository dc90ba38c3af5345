// SPDX-License-Identifier: MIT
// Compiled with -std=c++17 by the compile-fail check: must stop with the
// library's own message, not a cascade of errors about concepts.
#include <forksafe/forksafe.hpp>
int main() {}
