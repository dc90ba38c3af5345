// SPDX-License-Identifier: MIT
//
// forksafe/detail/process_hub.hpp: the state there must be exactly one of in
// a process (the fork handler registry, the fork generation, thread ids, the
// quiesce gate), and how every copy of forksafe in the process finds it.
//
// Why not a plain inline variable with default visibility: g++ makes such
// variables STB_GNU_UNIQUE, which keeps every shared object holding one
// mapped for ever (dlclose does nothing), and an executable built without
// -rdynamic does not export its copy, so a plugin it dlopens binds a second
// one. So each shared object (and the executable) keeps a hidden pointer,
// its slot, and names the slot's address in an ELF note, `.note.forksafe`.
// Notes are mapped and listed by dl_iterate_phdr whether or not anything is
// exported, so the first copy to look finds no hub and makes one; every
// later copy finds it in an earlier object's slot and adopts it. Election
// runs inside dl_iterate_phdr, which holds the loader's lock: two objects
// cannot elect at once.
//
// The hub is plain data on the heap, never freed. A copy adopts only a hub
// whose `abi` equals its own hub_abi: bump hub_abi whenever the layout of
// process_hub (or of anything it holds) or the meaning of a field changes.
// A copy that meets only hubs of other ABIs makes its own and says so once on
// stderr; it then has its own registry (both run on every fork, but backing
// out does not span them).
//
// Code pointers into one object are kept in the hub only where there must be
// one instance of the code: the pthread_atfork triple and the per-thread
// record. The object that installs one of them is pinned (RTLD_NODELETE), so
// the code stays mapped; every other object can be unloaded.

#ifndef FORKSAFE_DETAIL_PROCESS_HUB_HPP
#define FORKSAFE_DETAIL_PROCESS_HUB_HPP

#include "config.hpp"
#include "owner_lock.hpp"

#include <atomic>  // the hub's counters
#include <cstddef> // std::size_t
#include <cstdint> // fixed-width fields of the ABI
#include <cstdio>  // std::fprintf: an incompatible hub
#include <cstring> // std::memcmp: note names
#include <new>     // std::nothrow

#if defined(__linux__) || defined(__FreeBSD__) || defined(__NetBSD__)
#define FORKSAFE_HAS_HUB_NOTE 1
#include <dlfcn.h> // dladdr, dlopen(RTLD_NOLOAD | RTLD_NODELETE): pinning
#include <link.h>  // dl_iterate_phdr, ElfW: finding the notes
#else
#define FORKSAFE_HAS_HUB_NOTE 0
#endif

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// The hub's ABI: bump on any change of layout or meaning (see the file comment).
inline constexpr std::uint32_t hub_abi = FORKSAFE_ABI_VERSION;
inline constexpr std::uint64_t hub_magic = 0x9e3c'41f2'b7d5'086aULL;

/// The read (shared) locks of fork-safe shared mutexes a thread holds, so a
/// child can tell the survivor's read locks from those of threads that
/// vanished. A thread may hold at most `capacity` at once.
struct shared_holds {
  static constexpr std::uint32_t capacity = 32;
  const void* held[capacity]; // NOLINT(modernize-avoid-c-arrays): a hub record, plain data
  std::uint32_t count;

  /// How many read locks on `m` this list holds.
  [[nodiscard]] std::uint32_t holds_of(const void* m) const noexcept {
    std::uint32_t n = 0;
    for (std::uint32_t i = 0; i < count; ++i) n += held[i] == m ? 1 : 0;
    return n;
  }
};

/// What forksafe keeps per thread. One per thread per process, whichever
/// object's code asks (see thread_record_of).
struct thread_record {
  std::uint32_t id;            ///< 30-bit thread id, 0 until assigned; kept by fork's survivor
  std::uint32_t quiesce_depth; ///< quiesce locks (exclusive or shared) this thread holds
  std::uint32_t nested_forks;  ///< forks begun on this thread inside a fork's handler window
  std::uint32_t reserved;
  shared_holds holds;
};

struct registry_state; // detail/registry_core.hpp
struct quiesce_state;  // detail/quiesce_domain.hpp

/// The one per process. Only ever grows at the end within one hub_abi.
struct process_hub {
  std::uint64_t magic;
  std::uint32_t abi;
  std::uint32_t size;
  owner_lock init_lock; ///< guards the lazy parts below; taken with owner id 1 (it precedes thread ids)
  std::uint32_t pad0;

  // Code with one instance per process (set once, under init_lock).
  thread_record* (*current_thread)() noexcept;

  // Fork generation and thread identity.
  std::atomic<std::uint64_t> fork_generation;
  std::atomic<std::uint32_t> next_thread_id;
  // Set in a child by the registry: ids below first_id_of_generation, other
  // than survivor_id, belong to threads that did not survive a fork.
  std::atomic<std::uint32_t> first_id_of_generation;
  std::atomic<std::uint32_t> survivor_id;
  std::uint32_t pad1;
  std::atomic<const shared_holds*> survivor_holds;

  // The quiesce gate (detail/quiesce_domain.hpp), here so the lock paths
  // reach it in one load: bit 0 closed (a fork is being prepared), bit 1
  // admitting (held-back threads may pass), bits 2-31 the fork epoch.
  std::atomic<std::uint32_t> quiesce_gate;
  std::atomic<std::uint32_t> quiesce_gate_waiters; ///< threads asleep on the gate word
  std::atomic<std::uint32_t> quiesce_forker;       ///< the thread preparing a fork, while the gate is closed
  std::uint32_t pad2;

  // Made on first use (detail/registry_core.hpp, detail/quiesce_domain.hpp).
  std::atomic<registry_state*> registry;
  std::atomic<quiesce_state*> quiesce;
};

/// The owner id a quiesce lock is given in the child of a fork that went on
/// without it (the prepare timed out while another thread held it): its
/// lock() throws fork_poisoned there. Never a thread's id.
inline constexpr std::uint32_t poisoned_owner = 0x3fffffffU;

// The slot's and the note's symbol names carry the ABI version, so two
// versions linked into one object keep apart.
#define FORKSAFE_HUB_SLOT_SYMBOL "forksafe_hub_slot_abi" FORKSAFE_PP_STR(FORKSAFE_ABI_VERSION)
#define FORKSAFE_HUB_NOTE_GROUP "forksafe_hub_note_abi" FORKSAFE_PP_STR(FORKSAFE_ABI_VERSION)

/// This object's slot: the hub it uses, once found. Hidden: one per shared
/// object (not merged across them, so never STB_GNU_UNIQUE).
FORKSAFE_HIDDEN inline process_hub* hub_slot asm(FORKSAFE_HUB_SLOT_SYMBOL) = nullptr;

#if FORKSAFE_HAS_HUB_NOTE
// The note: name "forksafe", type hub_note_type, descriptor = {abi, offset
// from the descriptor's second word to this object's slot}. PC-relative, so
// no dynamic relocation is needed; in a COMDAT group, so one per object.
inline constexpr std::uint32_t hub_note_type = 0x46534b31; // "FSK1"
// clang-format off
__asm__(".pushsection .note.forksafe,\"aG\",%note," FORKSAFE_HUB_NOTE_GROUP ",comdat\n"
        ".balign 4\n"
        ".long 9\n"          // namesz: "forksafe" and its NUL
        ".long 8\n"          // descsz
        ".long 0x46534b31\n" // type
        ".asciz \"forksafe\"\n"
        ".balign 4\n"
        ".long 1\n"          // the slot's ABI generation (the note's format, not hub_abi)
        ".long " FORKSAFE_HUB_SLOT_SYMBOL " - .\n"
        ".popsection\n");
// clang-format on

/// The slot an object's forksafe note names, or nullptr.
inline process_hub** slot_in_object(const dl_phdr_info& info) noexcept {
  for (int k = 0; k < info.dlpi_phnum; ++k) {
    const ElfW(Phdr)& ph = info.dlpi_phdr[k];
    if (ph.p_type != PT_NOTE) continue;
    // NOLINTNEXTLINE(performance-no-int-to-ptr): the loader gives the segment's address as a number
    const char* p = reinterpret_cast<const char*>(info.dlpi_addr + ph.p_vaddr);
    const char* const end = p + ph.p_memsz;
    while (end - p >= 12) {
      std::uint32_t namesz;
      std::uint32_t descsz;
      std::uint32_t type;
      std::memcpy(&namesz, p, 4);
      std::memcpy(&descsz, p + 4, 4);
      std::memcpy(&type, p + 8, 4);
      const char* const name = p + 12;
      const char* const desc = name + ((namesz + 3U) & ~3U);
      const char* const next = desc + ((descsz + 3U) & ~3U);
      if (next > end || next <= p) break;
      if (type == hub_note_type && namesz == 9 && descsz == 8 && std::memcmp(name, "forksafe", 9) == 0) {
        std::uint32_t generation;
        std::int32_t offset;
        std::memcpy(&generation, desc, 4);
        std::memcpy(&offset, desc + 4, 4);
        if (generation == 1) return reinterpret_cast<process_hub**>(const_cast<char*>(desc + 4) + offset);
      }
      p = next;
    }
  }
  return nullptr;
}
#endif

inline process_hub* make_hub() noexcept {
  auto* h = new (std::nothrow) process_hub{};
  if (h == nullptr) return nullptr;
  h->magic = hub_magic;
  h->abi = hub_abi;
  h->size = sizeof(process_hub);
  h->next_thread_id.store(1, std::memory_order_relaxed);
  return h;
}

/// Finds the process's hub (or makes it) and stores it in this object's slot.
/// std::terminate if it cannot be allocated (at static initialisation).
FORKSAFE_NOINLINE inline process_hub& elect_hub() noexcept {
#if FORKSAFE_HAS_HUB_NOTE
  struct search {
    process_hub* found = nullptr;
    bool foreign = false; // saw a hub of another ABI
  } s;
  ::dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* p) {
        auto& found = *static_cast<search*>(p);
        process_hub** slot = slot_in_object(*info);
        if (slot == nullptr) return 0;
        if (slot == &hub_slot) {
          if (hub_slot != nullptr) found.found = hub_slot; // another thread of this object won meanwhile
          return found.found != nullptr ? 1 : 0;
        }
        process_hub* h = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
        if (h == nullptr || h->magic != hub_magic) return 0;
        if (h->abi != hub_abi) {
          found.foreign = true;
          return 0;
        }
        found.found = h;
        return 1;
      },
      &s);
  if (s.found == nullptr) {
    // The loader's lock is released now; elect again under a lock of our own
    // making would need a hub. A second object electing at this instant
    // (only possible outside static initialisation and dlopen) would make a
    // second hub: the compare-exchange below keeps this object consistent,
    // and the race needs two first uses from two objects at once.
    s.found = make_hub();
    if (s.found == nullptr) {
      std::fputs("forksafe: cannot allocate the process hub; calling std::terminate\n", stderr);
      std::terminate();
    }
    if (s.foreign) {
      std::fprintf(stderr,
                   "forksafe: this copy (hub ABI %u) found only other forksafe versions in the process; it keeps "
                   "its own fork registry (handlers of both run on every fork, backing out does not span them)\n",
                   static_cast<unsigned>(hub_abi));
    }
  }
  process_hub* expected = nullptr;
  if (!__atomic_compare_exchange_n(&hub_slot, &expected, s.found, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    return *expected; // another thread of this object elected first
  }
  return *s.found;
#else
  static process_hub* const h = make_hub();
  process_hub* expected = nullptr;
  __atomic_compare_exchange_n(&hub_slot, &expected, h, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
  return *h;
#endif
}

/// The process's hub: one load once this object has found it.
inline process_hub& hub() noexcept {
  process_hub* const h = __atomic_load_n(&hub_slot, __ATOMIC_ACQUIRE);
  return FORKSAFE_LIKELY(h != nullptr) ? *h : elect_hub();
}

// Every object elects while it is loaded: during static initialisation of the
// program and its linked libraries (one thread), or inside dlopen (under the
// loader's lock). So no two objects elect at once in practice, and a plugin
// finds the hub however early it first uses forksafe.
FORKSAFE_HIDDEN inline const bool hub_elected_ = (hub(), true);

/// Keeps the object holding `address` loaded for the life of the process
/// (its code is in the hub). Best effort: a static program, or one without
/// dladdr, has nothing to unload anyway.
inline void pin_object_of(const void* address) noexcept {
#if FORKSAFE_HAS_HUB_NOTE
  Dl_info info{};
  if (::dladdr(address, &info) == 0 || info.dli_fname == nullptr) return;
  if (void* self = ::dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE)) ::dlclose(self);
#else
  (void)address;
#endif
}

// ---- thread records -------------------------------------------------------

// The record lives in the thread-local storage of the object that installed
// hub().current_thread (pinned, so it outlives every thread's use of it);
// every object caches a pointer to it in its own thread-local storage.
FORKSAFE_HIDDEN inline thread_local thread_record this_thread_record_{};
FORKSAFE_HIDDEN inline thread_local thread_record* this_thread_cache_ = nullptr;

inline thread_record* current_thread_here() noexcept { return &this_thread_record_; }

FORKSAFE_NOINLINE inline thread_record& find_thread_record() noexcept {
  process_hub& h = hub();
  thread_record* (*get)() noexcept = __atomic_load_n(&h.current_thread, __ATOMIC_ACQUIRE);
  if (get == nullptr) {
    h.init_lock.lock(1);
    get = h.current_thread;
    if (get == nullptr) {
      get = &current_thread_here;
      pin_object_of(reinterpret_cast<const void*>(&current_thread_here));
      __atomic_store_n(&h.current_thread, get, __ATOMIC_RELEASE);
    }
    h.init_lock.unlock();
  }
  thread_record* r = get();
  while (r->id == 0 || r->id == poisoned_owner) {
    r->id = h.next_thread_id.fetch_add(1, std::memory_order_relaxed) & 0x3fffffffU;
  }
  this_thread_cache_ = r;
  return *r;
}

/// This thread's record (one TLS load once cached).
inline thread_record& this_thread() noexcept {
  thread_record* r = this_thread_cache_;
  return FORKSAFE_LIKELY(r != nullptr) ? *r : find_thread_record();
}

/// This thread's id: non-zero, 30 bits, stable across fork() for the survivor.
inline std::uint32_t this_thread_id() noexcept { return this_thread().id; }

/// True if the thread with `id` existed in an ancestor process but not here.
inline bool thread_vanished(std::uint32_t id) noexcept {
  process_hub& h = hub();
  return id < h.first_id_of_generation.load(std::memory_order_relaxed) &&
         id != h.survivor_id.load(std::memory_order_relaxed);
}

/// Called in a forked child by the registry, before any user handler.
inline void record_fork_survivor() noexcept {
  process_hub& h = hub();
  thread_record& me = this_thread();
  h.survivor_id.store(me.id, std::memory_order_relaxed);
  h.survivor_holds.store(&me.holds, std::memory_order_relaxed);
  h.first_id_of_generation.store(h.next_thread_id.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_PROCESS_HUB_HPP
