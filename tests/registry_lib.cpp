// SPDX-License-Identifier: MIT
// A shared library that registers a fork handler: built as registry_lib_a
// (linked), registry_lib_b (dlopen'ed) and registry_lib_hidden (dlopen'ed,
// -fvisibility=hidden) to show the program has one registry, and dlopen'ed
// by process_pool's test as code its workers do not have.
#include <forksafe/atfork_registry.hpp>

#include <unistd.h> // write

#define FS_CAT2(a, b) a##b
#define FS_CAT(a, b) FS_CAT2(a, b)
#define FS_NAME(suffix) FS_CAT(FS_CAT(registry_lib_, REGISTRY_LIB_NAME), suffix)
#define FS_STR2(x) #x
#define FS_STR(x) FS_STR2(x)

namespace {
forksafe::atfork_handle handle;
int out_fd = -1;
} // namespace

extern "C" {
__attribute__((visibility("default"))) void* FS_NAME(_address)() { return &forksafe::atfork_registry::instance(); }
__attribute__((visibility("default"))) void FS_NAME(_register)(int fd) {
  out_fd = fd;
  handle = forksafe::atfork_registry::instance().add(nullptr, nullptr,
                                                     [] { (void)!::write(out_fd, FS_STR(REGISTRY_LIB_NAME), 1); });
}
__attribute__((visibility("default"))) void FS_NAME(_unregister)() { handle.reset(); }
// A plain function for process_pool's test: code loaded after a pool started.
__attribute__((visibility("default"))) int FS_NAME(_twice)(int x) { return 2 * x; }
}
