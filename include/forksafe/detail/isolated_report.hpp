// SPDX-License-Identifier: MIT
//
// forksafe/detail/isolated_report.hpp: the records an isolated test case's
// child sends its parent (forksafe/doctest.hpp): each assertion, message,
// exception and the end, so the parent's test framework reports them once.
// Plain data, no test framework needed to read or write them.
//
// A record on the wire: kind (1 byte), payload length (4 bytes), payload.
// Integers are 4 or 8 bytes in the host's order (parent and child are one
// program); a string is its length (4 bytes) and its bytes. The parent reads
// what the child sent as untrusted input: a length beyond what arrived ends
// the reading there, and the parent says the report was cut or garbled.

#ifndef FORKSAFE_DETAIL_ISOLATED_REPORT_HPP
#define FORKSAFE_DETAIL_ISOLATED_REPORT_HPP

#include "config.hpp"

#include <cerrno>   // EINTR
#include <cstddef>  // std::size_t
#include <cstdint>  // fixed-size fields
#include <cstring>  // std::memcpy
#include <optional> // a record, or none
#include <string>   // fields

#include <unistd.h> // write

namespace forksafe::inline FORKSAFE_ABI_NAMESPACE::detail {

/// One record. Which fields mean something depends on `kind`.
struct isolated_record {
  enum class kind : unsigned char {
    assertion = 1, ///< an assertion (passed or failed): every field
    message = 2,   ///< MESSAGE, WARN/FAIL_CHECK/FAIL: severity, file, line, text, contexts
    passes = 3,    ///< `count` passed assertions not worth reporting one by one
    subcase = 4,   ///< a SUBCASE was entered: file, line, text (its name)
    threw = 5,     ///< an exception escaped the body: text (type), decomposition (what)
    end = 6,       ///< the body returned (or stopped at a REQUIRE): nothing follows
  };
  kind what = kind::end;
  std::uint32_t severity = 0; ///< doctest's assertType
  std::int32_t line = 0;
  std::uint8_t failed = 0;
  std::uint8_t threw_exception = 0;
  std::uint8_t threw_as = 0;
  std::uint64_t count = 0;
  std::string file{};
  std::string expression{};
  std::string decomposition{};
  std::string exception{};
  std::string exception_type{};
  std::string exception_string{};
  std::string text{};
  std::string contexts{};
};

/// Encodes records in the child.
class isolated_record_writer {
public:
  static std::string encode(const isolated_record& r) {
    std::string payload;
    put(payload, r.severity);
    put(payload, r.line);
    put(payload, r.failed);
    put(payload, r.threw_exception);
    put(payload, r.threw_as);
    put(payload, r.count);
    for (const std::string* s : {&r.file, &r.expression, &r.decomposition, &r.exception, &r.exception_type,
                                 &r.exception_string, &r.text, &r.contexts}) {
      put(payload, static_cast<std::uint32_t>(s->size()));
      payload += *s;
    }
    std::string out;
    out += static_cast<char>(r.what);
    put(out, static_cast<std::uint32_t>(payload.size()));
    out += payload;
    return out;
  }

  /// Writes `r` to `fd`, blocking until all of it is written; false if the
  /// descriptor failed (the parent is gone).
  static bool send(int fd, const isolated_record& r) noexcept {
    try {
      const std::string bytes = encode(r);
      std::size_t done = 0;
      while (done < bytes.size()) {
        const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        done += static_cast<std::size_t>(n);
      }
      return true;
    } catch (...) {
      return false; // out of memory in the child: the record is lost, the parent says the report was cut
    }
  }

private:
  template <class I>
  static void put(std::string& out, I value) {
    char bytes[sizeof(I)]; // NOLINT(modernize-avoid-c-arrays): raw bytes
    std::memcpy(bytes, &value, sizeof(I));
    out.append(bytes, sizeof(I));
  }
};

/// Decodes what arrived in the parent, record by record.
class isolated_record_reader {
public:
  isolated_record_reader(const char* data, std::size_t size) noexcept : p_(data), left_(size) {}

  /// The next record, or none at the end of what arrived or at a record
  /// that does not check out (garbled() then says so).
  std::optional<isolated_record> next() {
    if (left_ == 0) return std::nullopt;
    constexpr std::size_t header = 1 + sizeof(std::uint32_t);
    if (left_ < header) return fail();
    isolated_record r;
    const auto k = static_cast<unsigned char>(p_[0]);
    if (k < 1 || k > 6) return fail();
    r.what = static_cast<isolated_record::kind>(k);
    std::uint32_t length = 0;
    std::memcpy(&length, p_ + 1, sizeof length);
    if (length > left_ - header) return fail();
    const char* q = p_ + header;
    std::size_t n = length;
    if (!get(q, n, r.severity) || !get(q, n, r.line) || !get(q, n, r.failed) || !get(q, n, r.threw_exception) ||
        !get(q, n, r.threw_as) || !get(q, n, r.count)) {
      return fail();
    }
    for (std::string* s : {&r.file, &r.expression, &r.decomposition, &r.exception, &r.exception_type,
                           &r.exception_string, &r.text, &r.contexts}) {
      std::uint32_t size = 0;
      if (!get(q, n, size) || size > n) return fail();
      s->assign(q, size);
      q += size;
      n -= size;
    }
    if (n != 0) return fail();
    p_ += header + length;
    left_ -= header + length;
    return r;
  }

  /// Whether reading stopped at bytes that are not a whole record.
  [[nodiscard]] bool garbled() const noexcept { return garbled_; }

private:
  std::optional<isolated_record> fail() noexcept {
    garbled_ = true;
    left_ = 0;
    return std::nullopt;
  }
  template <class I>
  static bool get(const char*& q, std::size_t& n, I& value) noexcept {
    if (n < sizeof(I)) return false;
    std::memcpy(&value, q, sizeof(I));
    q += sizeof(I);
    n -= sizeof(I);
    return true;
  }

  const char* p_;
  std::size_t left_;
  bool garbled_ = false;
};

} // namespace forksafe::detail

#endif // FORKSAFE_DETAIL_ISOLATED_REPORT_HPP
