// SPDX-License-Identifier: MIT
// glibc's tst-atfork2mod, for tests/peers/test_glibc.cpp: a plugin that
// registers fork handlers when it is loaded (glibc's registers in a
// constructor; here a namespace-scope handle does, and dlclose destroys it).
// glibc's module reaches the executable's `val` through an exported symbol;
// the executable here exports nothing (no -rdynamic), so it hands the plugin
// a pointer instead. Also: the registry this plugin sees, and an entry that
// refuses its first prepare (one retry loop for the whole process).
#include <forksafe/atfork_registry.hpp>

#define ATFORK2MOD_EXPORT extern "C" __attribute__((visibility("default")))

namespace {
int* val = nullptr;                  // the executable's, once bound
void (*note)(const char*) = nullptr; // the executable's log, once bound
int refusals = 0;

// tst-atfork2mod's arithmetic: prepare ++val, parent val *= 4, child val *= 8.
forksafe::atfork_handle arithmetic = forksafe::atfork_registry::instance().add(
    [] {
      if (val != nullptr) ++*val;
    },
    [] {
      if (val != nullptr) *val *= 4;
    },
    [] {
      if (val != nullptr) *val *= 8;
    });

forksafe::atfork_handle refusing;
} // namespace

ATFORK2MOD_EXPORT void* atfork2mod_registry() { return &forksafe::atfork_registry::instance(); }

ATFORK2MOD_EXPORT void atfork2mod_bind(int* v) { val = v; }

// An entry whose prepare notes "R! " and refuses `n` times, then notes "R ";
// its parent handler notes "PR ", its child handler "CR ".
ATFORK2MOD_EXPORT void atfork2mod_add_refusing(void (*log)(const char*), int n) {
  note = log;
  refusals = n;
  refusing = forksafe::atfork_registry::instance().add(
      [] {
        if (refusals > 0) {
          --refusals;
          note("R! ");
          return false;
        }
        note("R ");
        return true;
      },
      [] { note("PR "); }, [] { note("CR "); });
}
