// SPDX-License-Identifier: MIT
// get() on an rvalue handle returns T by value, on the caller's stack: for a
// 64 MiB result that would overflow it, so process_result refuses at compile
// time and says what to do instead (keep the handle, use get()'s reference).
#include <forksafe/process_result.hpp>

#include <array> // std::array: the large result

struct sixty_four_mib {
  std::array<unsigned char, std::size_t{64} << 20> bytes;
};

int main() {
  const sixty_four_mib value = forksafe::fork_call([] { return sixty_four_mib{}; }).get();
  return value.bytes[0];
}
