// SPDX-License-Identifier: MIT
// valgrind's negative control: a program with a definite leak and a read of
// uninitialised memory. The valgrind suite runs it with the same options as
// the tests and passes only if memcheck reports it (so memcheck is on and its
// errors fail a run).

#include <cstdio>  // std::printf
#include <cstdlib> // std::malloc

int* volatile sink; // volatile: the compiler must keep the allocation

int main() {
  sink = static_cast<int*>(std::malloc(64));
  if (sink[3] > 0) std::printf("uninitialised, positive\n"); // a conditional jump on uninitialised memory
  sink = nullptr;                                            // the 64 bytes are now definitely lost
  std::printf("the control leaked 64 bytes\n");
  return 0;
}
