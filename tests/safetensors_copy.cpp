// Driver of tests/safetensors_test.sh: reads a safetensors file with dgr and writes what it read to another
// (metadata included). Usage: safetensors_copy IN OUT
#include <iostream>

#include "common/error.h"
#include "data/safetensors.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: safetensors_copy IN OUT\n";
    return 2;
  }
  try {
    const auto contents = dgr::data::read_safetensors(argv[1]);
    dgr::data::write_safetensors(argv[2], contents.arrays, contents.metadata);
    std::cout << contents.arrays.size() << " tensors\n";
  } catch (const dgr::Error& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  return 0;
}
