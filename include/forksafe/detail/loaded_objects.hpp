// SPDX-License-Identifier: MIT
//
// forksafe/detail/loaded_objects.hpp: the shared objects mapped when a
// process_pool forked its workers, and whether some code lies in one of
// them: code dlopen'ed later is not mapped in the workers, so a task made of
// it is refused rather than crashing a worker.

#ifndef FORKSAFE_DETAIL_LOADED_OBJECTS_HPP
#define FORKSAFE_DETAIL_LOADED_OBJECTS_HPP

#include "config.hpp"

#include <cstddef>   // std::size_t
#include <mutex>     // checked addresses, from submitting threads
#include <optional>  // the object holding an address
#include <set>       // the objects, the addresses checked
#include <stdexcept> // std::invalid_argument
#include <string>    // object names

#include <link.h> // dl_iterate_phdr, ElfW

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

class loaded_objects {
public:
  /// Records every object mapped now. Call once, before the workers are forked.
  void record() {
    ::dl_iterate_phdr(
        [](dl_phdr_info* info, std::size_t, void* self) {
          static_cast<loaded_objects*>(self)->objects_.insert(
              object{info->dlpi_addr, info->dlpi_name != nullptr ? info->dlpi_name : ""});
          return 0;
        },
        this);
  }

  /// Throws std::invalid_argument if `code` lies in an object loaded after
  /// record(). Each address is looked up once. Thread-safe.
  void check(const void* code) {
    {
      std::lock_guard lock(mutex_);
      if (checked_.count(code) != 0) return;
    }
    const auto o = holding(code);
    if (o && objects_.count(*o) == 0) {
      throw std::invalid_argument("forksafe::process_pool::submit: the task's code is in " +
                                  (o->name.empty() ? std::string("an object") : o->name) +
                                  ", loaded after the pool's workers were forked; they do not have it mapped");
    }
    std::lock_guard lock(mutex_);
    checked_.insert(code);
  }

private:
  struct object {
    ElfW(Addr) bias;
    std::string name;
    friend bool operator<(const object& a, const object& b) {
      return a.bias != b.bias ? a.bias < b.bias : a.name < b.name;
    }
  };

  // The shared object (load bias and name) whose segments hold `address`.
  static std::optional<object> holding(const void* address) {
    struct search {
      ElfW(Addr) address;
      std::optional<object> found;
    } s{reinterpret_cast<ElfW(Addr)>(address), std::nullopt};
    ::dl_iterate_phdr(
        [](dl_phdr_info* info, std::size_t, void* p) {
          auto& q = *static_cast<search*>(p);
          for (int k = 0; k < info->dlpi_phnum; ++k) {
            const ElfW(Phdr)& ph = info->dlpi_phdr[k];
            const ElfW(Addr) start = info->dlpi_addr + ph.p_vaddr;
            if (ph.p_type == PT_LOAD && q.address >= start && q.address < start + ph.p_memsz) {
              q.found = object{info->dlpi_addr, info->dlpi_name != nullptr ? info->dlpi_name : ""};
              return 1;
            }
          }
          return 0;
        },
        &s);
    return s.found;
  }

  std::set<object> objects_; // written by record(), then only read
  std::mutex mutex_;
  std::set<const void*> checked_; // code addresses found mapped (under mutex_)
};

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_LOADED_OBJECTS_HPP
