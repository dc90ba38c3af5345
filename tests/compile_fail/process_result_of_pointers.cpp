// SPDX-License-Identifier: MIT
// A handle on a value holding addresses: the first error line must name
// process_result, the pointer type inside and the remedy.
#include <forksafe/process_result.hpp>

#include <mutex>  // what the pointers point to
#include <vector> // what holds them

int main() {
  forksafe::process_result<std::vector<std::mutex*>> r;
  return r.valid() ? 1 : 0;
}
