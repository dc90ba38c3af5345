// SPDX-License-Identifier: MIT
// glibc's tst-atfork3mod, for tests/peers/test_glibc.cpp: a plugin whose
// exported function registers fork handlers; the test dlcloses it from inside
// a fork handler. Each handler notes what ran through the executable's log;
// the handlers share one object that notes "~M " when the entry is destroyed,
// so the log shows whether that happened inside the dlclose.
#include <forksafe/atfork_registry.hpp>

#include <memory> // std::shared_ptr: one farewell for the entry's three handlers

#define ATFORK3MOD_EXPORT extern "C" __attribute__((visibility("default")))

namespace {
void (*note)(const char*) = nullptr;

struct farewell {
  farewell() = default;
  farewell(const farewell&) = delete; // one note, from the last owner
  farewell& operator=(const farewell&) = delete;
  ~farewell() { note("~M "); }
};

forksafe::atfork_handle handle;
} // namespace

ATFORK3MOD_EXPORT void atfork3mod_register(void (*log)(const char*)) {
  note = log;
  // Not std::make_shared: under g++ it brings a STB_GNU_UNIQUE symbol of
  // libstdc++'s (_Sp_make_shared_tag::_S_ti()::__tag), and an object with one
  // can never be unloaded.
  const std::shared_ptr<farewell> bye(new farewell);
  handle =
      forksafe::atfork_registry::instance().add([bye] { note("mp "); }, [bye] { note("mP "); }, [bye] { note("mc "); });
}
