// SPDX-License-Identifier: MIT
// Values that cross in their wire form: strings, vectors, maps, optionals,
// variants and structs that list their members, back from fork_call and to
// and from process_pool workers, small (in the frame) and large (in a
// memfd). And what a child sends back is untrusted: crafted frames (cut
// short, garbled, lengths of 2^63, a memfd that holds less than the frame
// claims) end as child_error malformed(), never as a read past what arrived,
// an allocation of what a length claims, or a leaked descriptor.

#include <forksafe/process_pool.hpp>

#include "support/expect_error.hpp"
#include "support/fork_harness.hpp"
#include "support/value_types.hpp"

#include <cstdint>       // the crafted frames' fields
#include <cstring>       // std::memcpy
#include <map>           // results
#include <numeric>       // std::accumulate: a task's sum
#include <optional>      // results
#include <set>           // results
#include <stdexcept>     // a task that throws
#include <string>        // results, arguments
#include <unordered_set> // results
#include <utility>       // std::pair
#include <variant>       // results
#include <vector>        // results, arguments

#include <dirent.h>   // /proc/self/fd: the child finds its pipe and memfd
#include <fcntl.h>    // fcntl: which end of a pipe
#include <sys/stat.h> // fstat: a pipe
#include <unistd.h>   // write, _exit, ftruncate, readlink

#include <doctest/doctest.h>

using forksafe::fork_call;
using forksafe_test::count_open_fds;
using forksafe_test::error_of;
using forksafe_test::listed_nothing;
using forksafe_test::listed_row;

namespace {

listed_row sample_row() {
  return listed_row{7, "seven", {1.5, 2.5}, {{"a", 1}, {"b", 2}}, std::vector<std::string>{"x", "y"}};
}

} // namespace

TEST_CASE("values: fork_call returns strings, containers and listed structs, small and large" *
          doctest::test_suite("memcheck")) {
  const int fds = count_open_fds();
  CHECK(fork_call([] { return std::string(); }).get().empty());
  CHECK(fork_call([] { return std::string(100, 's'); }).get() == std::string(100, 's'));
  CHECK(fork_call([] { return std::string(5000, 'L'); }).get() == std::string(5000, 'L')); // past the frame: memfd
  CHECK(fork_call([] { return std::u32string(U"wide"); }).get() == U"wide");
  const std::vector<std::string> words{"alpha", "", std::string(40, 'b')};
  CHECK(fork_call([&] { return words; }).get() == words);
  using nested = std::optional<std::vector<std::pair<int, std::string>>>;
  const nested n{{{1, "one"}, {2, "two"}}};
  CHECK(fork_call([&] { return n; }).get() == n);
  CHECK(fork_call([] { return nested(); }).get() == nested());
  const std::map<std::string, std::vector<int>> m{{"odd", {1, 3}}, {"even", {2}}};
  CHECK(fork_call([&] { return m; }).get() == m);
  const std::unordered_set<std::string> us{"p", "q"};
  CHECK(fork_call([&] { return us; }).get() == us);
  const std::vector<bool> bits{true, false, true, true, false, false, true, false, true, true};
  CHECK(fork_call([&] { return bits; }).get() == bits);
  using either = std::variant<int, std::string>;
  CHECK(fork_call([] { return either(std::string("right")); }).get() == either(std::string("right")));
  CHECK(fork_call([] { return sample_row(); }).get() == sample_row());
  CHECK(fork_call([] { return std::vector<listed_nothing>(3); }).get().size() == 3);
  std::vector<listed_row> rows(2000, sample_row()); // about 100 KiB: memfd
  CHECK(fork_call([&] { return rows; }).get() == rows);
  CHECK(count_open_fds() == fds);
}

TEST_CASE("values: get() && moves a large value out of the handle, it does not copy it") {
  auto r = fork_call([] { return std::vector<char>(8 << 20, 'z'); });
  const char* inside = r.get().data();
  std::vector<char> out = std::move(r).get();
  CHECK(out.size() == (8U << 20));
  CHECK(out.data() == inside); // the same buffer: moved, not copied
  CHECK(out.back() == 'z');
}

TEST_CASE("values: a valueless variant is reported by the child, not sent" * doctest::test_suite("memcheck")) {
  // A variant made valueless: an emplace whose construction throws, of a type
  // whose move may throw (so the variant cannot build it aside first).
  struct fragile {
    int v = 0;
    fragile() = default;
    explicit fragile(bool) { throw 2; }
    fragile(const fragile&) = default;
    fragile(fragile&& o) noexcept(false) : v(o.v) {}
    fragile& operator=(const fragile&) = default;
    fragile& operator=(fragile&&) = default;
    auto forksafe_members() { return std::tie(v); }
  };
  static_assert(forksafe::trivially_serializable<std::variant<std::string, fragile>>);
  const auto e = error_of(fork_call([] {
    std::variant<std::string, fragile> v;
    try {
      v.emplace<fragile>(true);
    } catch (int) {
    }
    return v;
  }));
  REQUIRE(e);
  CHECK(e->threw());
  CHECK(e->exception_type() == "std::bad_variant_access");
}

TEST_CASE("values: process_pool sends arguments and returns values of any size and shape" *
          doctest::test_suite("memcheck")) {
  forksafe::process_pool pool(2);
  const std::vector<double> big(2 << 20, 0.25); // 16 MiB
  auto sum = pool.submit([](const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0); }, big);
  CHECK(sum.get() == 0.25 * (2 << 20));
  CHECK(pool.submit([](std::string s) { return s + "!"; }, std::string(3000, 'a')).get() ==
        std::string(3000, 'a') + "!");
  CHECK(pool.submit([](const listed_row& r) { return r.name; }, sample_row()).get() == "seven");
  auto list = pool.submit(
      [](int count) {
        std::vector<std::string> out;
        for (int i = 0; i < count; ++i) out.push_back("line " + std::to_string(i));
        return out;
      },
      50000);
  const auto& got = list.get();
  REQUIRE(got.size() == 50000);
  CHECK(got.front() == "line 0");
  CHECK(got.back() == "line 49999");
  CHECK(pool.submit([] { return std::string(100, 'x'); }).get() == std::string(100, 'x'));
  CHECK(pool.submit([] { return sample_row(); }).get() == sample_row());
  // Many large results in turn: each memfd is received and closed.
  const int fds = count_open_fds();
  for (int i = 0; i < 20; ++i) CHECK(pool.submit([i] { return std::vector<int>(10000, i); }).get().back() == i);
  CHECK(count_open_fds() == fds);
}

namespace {
std::size_t count_doubles(const std::vector<double>& v) { return v.size(); }
} // namespace

TEST_CASE("values: large pool arguments, one after another and at once, each arrives as it was submitted") {
  forksafe::process_pool pool(2);
  // A function's name as the callable, with an argument in wire form.
  CHECK(pool.submit(count_doubles, std::vector<double>(300000, 1.0)).get() == 300000);
  // The memfds of large requests are reused: each task must still see its
  // own bytes, whichever memfd and whichever worker's mapping it got.
  const auto sum = [](const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0); };
  for (int round = 0; round < 6; ++round) {
    std::vector<forksafe::process_result<double>> results;
    for (int i = 0; i < 5; ++i) {
      const auto n = static_cast<std::size_t>(100000 + 50000 * ((round + i) % 3)); // three sizes, reused and not
      results.push_back(pool.submit(sum, std::vector<double>(n, static_cast<double>(i + 1))));
    }
    for (int i = 0; i < 5; ++i) {
      const auto n = static_cast<double>(100000 + 50000 * ((round + i) % 3));
      CHECK(results[static_cast<std::size_t>(i)].get() == n * (i + 1));
    }
  }
  // A task that fails does not spoil the memfd for the next one.
  const auto e = error_of(pool.submit([](const std::vector<double>&) -> int { throw std::runtime_error("no"); },
                                      std::vector<double>(200000, 2.0)));
  REQUIRE(e);
  CHECK(e->threw());
  CHECK(pool.submit(sum, std::vector<double>(200000, 3.0)).get() == 600000.0);
}

TEST_CASE("values: a task that sends descriptors of its own over its worker's socket does not spoil its result") {
  forksafe::process_pool pool(1);
  const int fds = count_open_fds();
  auto r = pool.submit([] {
    for (int fd = 3; fd < 1024; ++fd) {
      struct stat st {};
      if (::fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
      for (int i = 0; i < 3; ++i) (void)forksafe::detail::send_fd(fd, 0, 0xAA); // stdin, with a stray tag
    }
    return std::vector<int>(50000, 9); // 200 KiB: its memfd comes after the strays
  });
  const auto& v = r.get();
  REQUIRE(v.size() == 50000);
  CHECK(v.back() == 9);
  CHECK(pool.submit([] { return std::vector<int>(50000, 4); }).get().front() == 4);
  CHECK(count_open_fds() == fds); // the strays were closed
}

// ---- crafted frames -----------------------------------------------------------

namespace {

// The child's end of its result pipe, found as the only descriptor that is
// the write end of a pipe.
int result_pipe() {
  for (int fd = 3; fd < 1024; ++fd) {
    struct stat st {};
    if (::fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode) && (::fcntl(fd, F_GETFL) & O_ACCMODE) == O_WRONLY) return fd;
  }
  return -1;
}

// The memfd fork_call made for a value's wire form.
int value_memfd() {
  for (int fd = 3; fd < 1024; ++fd) {
    char link[64];
    char target[256] = {};
    std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    if (::readlink(link, target, sizeof target - 1) > 0 && std::strstr(target, "memfd:forksafe-value") != nullptr) {
      return fd;
    }
  }
  return -1;
}

struct crafted {
  std::uint32_t kind = 1;
  std::vector<unsigned char> payload;
  std::int64_t declared_size = -1; // the header's size field; -1: the payload's
  std::uint32_t magic = 0x666b636cU;
  std::size_t cut = 0; // bytes left off the end
};

template <class U>
void append(std::vector<unsigned char>& out, U v) {
  unsigned char b[sizeof v];
  std::memcpy(b, &v, sizeof v);
  out.insert(out.end(), b, b + sizeof v);
}

// In the child: writes the frame instead of returning, and ends.
[[noreturn]] void send_and_exit(const crafted& c) {
  std::vector<unsigned char> frame(64, 0);
  const std::uint32_t header[5] = {
      c.magic, c.kind,
      static_cast<std::uint32_t>(c.declared_size < 0 ? c.payload.size() : static_cast<std::size_t>(c.declared_size)), 0,
      0};
  std::memcpy(frame.data(), header, sizeof header);
  frame.insert(frame.end(), c.payload.begin(), c.payload.end());
  frame.resize(frame.size() - c.cut);
  (void)!::write(result_pipe(), frame.data(), frame.size());
  ::_exit(0);
}

template <class T>
forksafe::child_error malformed_from(const crafted& c) {
  auto e = error_of(fork_call([&c]() -> T { send_and_exit(c); }));
  REQUIRE(e);
  INFO(e->what());
  CHECK(e->malformed());
  return *e;
}

} // namespace

TEST_CASE("values: crafted frames are reported as malformed, never read past what arrived" *
          doctest::test_suite("memcheck")) {
  const int fds = count_open_fds();
  SUBCASE("a string whose length claims 2^63 bytes") {
    crafted c;
    append(c.payload, std::uint64_t{1} << 63);
    const auto e = malformed_from<std::string>(c);
    CHECK(e.defect().find("9223372036854775808") != std::string::npos);
  }
  SUBCASE("a vector of strings whose inner length runs past the end") {
    crafted c;
    append(c.payload, std::uint64_t{1});
    append(c.payload, std::uint64_t{500});
    c.payload.insert(c.payload.end(), 10, 'x');
    const auto e = malformed_from<std::vector<std::string>>(c);
    CHECK(e.defect().find("only") != std::string::npos);
  }
  SUBCASE("a frame cut short") {
    crafted c;
    append(c.payload, std::uint64_t{5});
    c.payload.insert(c.payload.end(), 5, 'x');
    c.cut = 3;
    const auto e = malformed_from<std::string>(c);
    CHECK(e.defect().find("not a result frame") != std::string::npos);
  }
  SUBCASE("a garbled header") {
    crafted c;
    c.magic = 0x12345678U;
    append(c.payload, std::uint64_t{0});
    malformed_from<std::string>(c);
  }
  SUBCASE("an inline value larger than a frame may hold") {
    crafted c;
    c.payload.assign(1200, 0);
    malformed_from<std::vector<char>>(c);
  }
  SUBCASE("bytes left over after the value") {
    crafted c;
    append(c.payload, std::uint64_t{2});
    c.payload.insert(c.payload.end(), 6, 'x');
    const auto e = malformed_from<std::string>(c);
    CHECK(e.defect().find("left over") != std::string::npos);
  }
  SUBCASE("an optional's flag that is neither 0 nor 1, a variant's index out of range") {
    crafted c;
    c.payload.push_back(7);
    malformed_from<std::optional<std::string>>(c);
    crafted v;
    append(v.payload, std::uint32_t{9});
    malformed_from<std::variant<int, std::string>>(v);
  }
  SUBCASE("a map that repeats a key") {
    crafted c;
    append(c.payload, std::uint64_t{2});
    append(c.payload, 1);
    append(c.payload, 10);
    append(c.payload, 1);
    append(c.payload, 20);
    const auto e = malformed_from<std::map<int, int>>(c);
    CHECK(e.defect().find("twice") != std::string::npos);
  }
  SUBCASE("a memfd value claiming 2^63 bytes") {
    crafted c;
    c.kind = 4;
    append(c.payload, std::uint64_t{1} << 63);
    const auto e = malformed_from<std::vector<std::string>>(c);
    CHECK(e.defect().find("memfd holds") != std::string::npos);
  }
  SUBCASE("a memfd sized sparse, never written: its size is not what arrived") {
    auto e = error_of(fork_call([]() -> std::string {
      const int m = value_memfd();
      (void)!::ftruncate(m, 1 << 30); // 1 GiB of holes
      crafted c;
      c.kind = 4;
      append(c.payload, std::uint64_t{1} << 30);
      send_and_exit(c);
    }));
    REQUIRE(e);
    CHECK(e->malformed());
    CHECK(e->defect().find("written") != std::string::npos);
  }
  SUBCASE("a memfd that holds a length beyond itself") {
    auto e = error_of(fork_call([]() -> std::vector<int> {
      const int m = value_memfd();
      std::vector<unsigned char> body;
      append(body, std::uint64_t{1} << 40);
      body.resize(8192, 0);
      (void)!::write(m, body.data(), body.size());
      crafted c;
      c.kind = 4;
      append(c.payload, std::uint64_t{body.size()});
      send_and_exit(c);
    }));
    REQUIRE(e);
    CHECK(e->malformed());
    CHECK(e->defect().find("1099511627776") != std::string::npos);
  }
  CHECK(count_open_fds() == fds);
}

TEST_CASE("values: negative control: the same crafted length read without the checks would claim 2^63 bytes") {
  // What the reader refuses is what a naive reader would allocate: the
  // crafted frame really says 2^63, so the checks above are what stopped it.
  crafted c;
  append(c.payload, std::uint64_t{1} << 63);
  std::uint64_t naive = 0;
  std::memcpy(&naive, c.payload.data(), sizeof naive);
  CHECK(naive == (std::uint64_t{1} << 63));
  forksafe::detail::wire_reader in(c.payload.data(), c.payload.size());
  forksafe::detail::wire_slot<std::string> out;
  CHECK_FALSE(forksafe::detail::read_wire(in, out));
  CHECK_FALSE(out.built());
}
