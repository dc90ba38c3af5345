// SPDX-License-Identifier: MIT
// glibc's tst-atfork4mod, for tests/peers/test_glibc.cpp: a plugin that
// registers fork handlers that must never run: the test's own entry,
// registered after it (so its prepare runs first), dlcloses this plugin
// before their turn comes. Any of them running aborts the process.
#include <forksafe/atfork_registry.hpp>

#include <cstdlib> // std::abort

#define ATFORK4MOD_EXPORT extern "C" __attribute__((visibility("default")))

namespace {
forksafe::atfork_handle handle;
} // namespace

ATFORK4MOD_EXPORT void atfork4mod_register() {
  handle = forksafe::atfork_registry::instance().add([] { std::abort(); }, [] { std::abort(); }, [] { std::abort(); });
}
