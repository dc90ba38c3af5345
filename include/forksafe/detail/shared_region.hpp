// SPDX-License-Identifier: MIT
//
// forksafe/detail/shared_region.hpp: a shared mapping made before fork() (or
// from a memfd, to pass to a process forked earlier), where a child builds a
// large result its parent then reads in place; and the memfd a large wire
// form travels in (written by one process, sealed, read by another that
// trusts none of it).

#ifndef FORKSAFE_DETAIL_SHARED_REGION_HPP
#define FORKSAFE_DETAIL_SHARED_REGION_HPP

#include "config.hpp"
#include "owner_process.hpp"
#include "unique_fd.hpp"

#include <array>        // spare_regions
#include <cerrno>       // errno
#include <cstddef>      // std::size_t
#include <cstdint>      // std::uint64_t, std::uintptr_t
#include <mutex>        // spare_regions
#include <string>       // error texts
#include <system_error> // std::system_error
#include <utility>      // std::exchange

#include <fcntl.h>    // F_ADD_SEALS
#include <sys/mman.h> // mmap, munmap, madvise, memfd_create
#include <sys/stat.h> // fstat: what a memfd holds
#include <unistd.h>   // sysconf, ftruncate

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// Faults a range of fresh pages in for writing with one system call instead
/// of one page fault per page (best effort, Linux 5.14+; the whole pages
/// inside the range only).
inline void populate_for_writing(void* data, std::size_t size) noexcept {
#if defined(MADV_POPULATE_WRITE)
  const std::uintptr_t page = 4096;
  const auto at = reinterpret_cast<std::uintptr_t>(data);
  const auto from = (at + page - 1) & ~(page - 1);
  const auto to = (at + size) & ~(page - 1);
  if (to > from) ::madvise(static_cast<char*>(data) + (from - at), to - from, MADV_POPULATE_WRITE);
#else
  (void)data;
  (void)size;
#endif
}

/// A shared anonymous mapping, made before fork() so parent and child see
/// the same pages. Move-only. In a process forked from the one that made it,
/// destroying an inherited copy does not unmap (the range may not be mapped
/// there, or may hold something else by then).
class shared_region {
public:
  shared_region() noexcept = default;
  /// Maps at least `bytes`, rounded up to whole pages. Throws std::system_error
  /// with errno (ENOMEM under RLIMIT_AS, say) and then holds nothing.
  explicit shared_region(std::size_t bytes) {
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    const std::size_t size = (bytes + page - 1) / page * page;
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      throw std::system_error(err, std::generic_category(),
                              "forksafe: fork_call could not map " + std::to_string(size) +
                                  " bytes of shared memory for its result (mmap)");
    }
    data_ = p;
    size_ = size;
    owner_.set();
  }
  /// Maps `bytes` of the file `fd` (a memfd) shared, and keeps `fd` so it can
  /// be passed to a process forked earlier (process_pool's workers). Takes
  /// ownership of `fd`. Throws std::system_error with errno.
  static shared_region adopt_fd(int fd, std::size_t bytes) {
    unique_fd owned(fd);
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      throw std::system_error(err, std::generic_category(),
                              "forksafe: could not map " + std::to_string(bytes) + " bytes of a result memfd (mmap)");
    }
    shared_region r;
    r.data_ = p;
    r.size_ = bytes;
    r.owner_.set();
    r.fd_ = std::move(owned);
    return r;
  }
  /// A memfd of `bytes`, mapped: for a result a process forked earlier (a
  /// pool worker) builds, after it received the descriptor. Throws
  /// std::system_error with errno (memfd_create, ftruncate, mmap).
  static shared_region memfd(std::size_t bytes) {
    unique_fd fd(::memfd_create("forksafe-result", MFD_CLOEXEC));
    if (!fd) {
      throw std::system_error(errno, std::generic_category(),
                              "forksafe::process_pool: memfd_create for a large result failed");
    }
    if (::ftruncate(fd.get(), static_cast<off_t>(bytes)) != 0) {
      throw std::system_error(errno, std::generic_category(),
                              "forksafe::process_pool: ftruncate of a result memfd failed");
    }
    return adopt_fd(fd.release(), bytes); // closes it if it throws
  }

  shared_region(shared_region&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)), owner_(other.owner_),
        fd_(std::move(other.fd_)) {}
  shared_region& operator=(shared_region&& other) noexcept {
    if (this != &other) {
      reset();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      owner_ = other.owner_;
      fd_ = std::move(other.fd_);
    }
    return *this;
  }
  shared_region(const shared_region&) = delete; // one owner unmaps
  shared_region& operator=(const shared_region&) = delete;
  ~shared_region() { reset(); }

  [[nodiscard]] void* data() const noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  /// The memfd behind an adopt_fd region, or -1.
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }

  /// After the fork that needs it: later forks (other calls, other threads)
  /// do not inherit the region, so it is freed when this handle lets go of
  /// it, not when the last unrelated child exits. Best effort.
  void keep_out_of_later_forks() const noexcept {
#if defined(MADV_DONTFORK)
    if (data_ != nullptr) ::madvise(data_, size_, MADV_DONTFORK);
#endif
  }

  void reset() noexcept {
    if (data_ != nullptr && owner_.here()) ::munmap(data_, size_);
    fd_.reset();
    data_ = nullptr;
    size_ = 0;
  }

private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
  owner_process owner_;
  unique_fd fd_;
};

/// memfd regions kept for reuse: at most `count` of them, `limit` bytes
/// together. take() hands out one of at least the size asked (and at most
/// twice it), or makes a new one. Thread-safe.
class spare_regions {
public:
  static constexpr std::size_t count = 4;
  static constexpr std::size_t limit = std::size_t{256} << 20;

  /// Throws std::system_error (shared_region::memfd).
  shared_region take(std::size_t bytes) {
    {
      std::lock_guard lock(mutex_);
      for (shared_region& r : spare_) {
        if (r.data() != nullptr && r.size() >= bytes && r.size() / 2 <= bytes) return std::move(r);
      }
    }
    return shared_region::memfd(bytes);
  }

  /// Keeps `r` if there is room, else lets it go.
  void give(shared_region r) noexcept {
    std::lock_guard lock(mutex_);
    std::size_t kept = r.size();
    shared_region* empty = nullptr;
    for (shared_region& s : spare_) {
      kept += s.size();
      if (s.data() == nullptr) empty = &s;
    }
    if (empty != nullptr && kept <= limit) *empty = std::move(r);
  }

private:
  std::mutex mutex_;
  std::array<shared_region, count> spare_{};
};

/// A memfd for a wire form whose size is known only once the value exists:
/// made by the process that will read it (fork_call's parent, before the
/// fork) or by the one that writes it (a pool worker, which then sends it).
/// Sealable. Throws std::system_error with errno.
inline unique_fd make_value_memfd(const char* who) {
  unique_fd fd(::memfd_create("forksafe-value", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) {
    throw std::system_error(errno, std::generic_category(), std::string(who) + ": memfd_create for a value failed");
  }
  return fd;
}

/// The writing side of a value memfd: sizes it, maps it, and, once the value
/// is written, unmaps it and seals it, so that nothing can shrink, grow or
/// change it while the other side reads.
class value_memfd_writer {
public:
  value_memfd_writer() noexcept = default;
  value_memfd_writer(const value_memfd_writer&) = delete;
  value_memfd_writer& operator=(const value_memfd_writer&) = delete;
  ~value_memfd_writer() { unmap(); }

  /// `bytes` writable bytes of `fd`, page-aligned. Throws std::system_error.
  unsigned char* map(int fd, std::size_t bytes) {
    if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
      throw std::system_error(errno, std::generic_category(),
                              "forksafe: could not size the memfd for a " + std::to_string(bytes) +
                                  "-byte value (ftruncate)");
    }
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      throw std::system_error(errno, std::generic_category(),
                              "forksafe: could not map the memfd for a " + std::to_string(bytes) +
                                  "-byte value (mmap)");
    }
    data_ = p;
    size_ = bytes;
    populate_for_writing(data_, size_);
    fd_ = fd;
    return static_cast<unsigned char*>(p);
  }

  /// Unmaps and seals (best effort: the reader checks what it needs).
  void seal() noexcept {
    unmap();
    if (fd_ >= 0) ::fcntl(fd_, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE);
  }

private:
  void unmap() noexcept {
    if (data_ != nullptr) ::munmap(data_, size_);
    data_ = nullptr;
  }
  void* data_ = nullptr;
  std::size_t size_ = 0;
  int fd_ = -1;
};

/// The reading side: maps `claimed` bytes of a memfd another process wrote,
/// read-only, after sealing it against shrinking (so no page of the mapping
/// can vanish under the reader, which would be SIGBUS) and checking that it
/// really holds that many bytes, written (a length field cannot make the
/// reader map or allocate what never arrived).
class value_memfd_view {
public:
  value_memfd_view() noexcept = default;
  value_memfd_view(const value_memfd_view&) = delete;
  value_memfd_view& operator=(const value_memfd_view&) = delete;
  ~value_memfd_view() {
    if (data_ != nullptr) ::munmap(data_, size_);
  }

  /// True once mapped; otherwise false and `defect` says why.
  bool open(int fd, std::uint64_t claimed, std::string& defect) {
    if (fd < 0) {
      defect = "the frame says the value is in a memfd, but no memfd came with it";
      return false;
    }
    if (::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) != 0 && (::fcntl(fd, F_GET_SEALS) & F_SEAL_SHRINK) == 0) {
      defect = "its memfd cannot be sealed against shrinking (errno " + std::to_string(errno) + ")";
      return false;
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      defect = "its memfd cannot be examined (fstat, errno " + std::to_string(errno) + ")";
      return false;
    }
    const auto size = static_cast<std::uint64_t>(st.st_size);
    const auto written = static_cast<std::uint64_t>(st.st_blocks) * 512U;
    if (claimed > size || claimed > written) {
      defect = "the frame claims " + std::to_string(claimed) + " bytes, but its memfd holds " + std::to_string(size) +
               " (" + std::to_string(written) + " written)";
      return false;
    }
    if (claimed == 0) return true;
    void* p = ::mmap(nullptr, static_cast<std::size_t>(claimed), PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (p == MAP_FAILED) {
      defect =
          "its memfd of " + std::to_string(claimed) + " bytes cannot be mapped (errno " + std::to_string(errno) + ")";
      return false;
    }
    data_ = p;
    size_ = static_cast<std::size_t>(claimed);
    return true;
  }

  [[nodiscard]] const unsigned char* data() const noexcept { return static_cast<const unsigned char*>(data_); }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }

private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_SHARED_REGION_HPP
