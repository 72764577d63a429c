// Hugging Face's safetensors files, read and written without Python (issue 20: importing and exporting BART
// checkpoints). The format (https://huggingface.co/docs/safetensors): 8 bytes little-endian N, N bytes of
// JSON {"NAME": {"dtype": "F32", "shape": [..], "data_offsets": [BEGIN, END]}, ..., "__metadata__": {str: str}},
// then the byte buffer; offsets are relative to the buffer, and the tensors cover it entirely, without holes
// or overlaps. Values are little-endian, row-major.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "data/array.h"

namespace dgr::data {

struct SafetensorsContents {
  std::vector<NamedArray> arrays;               // in buffer order
  std::map<std::string, std::string> metadata;  // "__metadata__" (e.g. {"format": "pt"})
};

// Reads every tensor. F32, BF16, F64, I64, I32, U8, I8, U64 keep their type and bytes; F16 is widened to
// float32 (exactly). Throws DataError naming the file (and the tensor) when the header is truncated or not a
// JSON object, a dtype is unknown, a tensor's offsets disagree with its shape and dtype or leave the buffer,
// the tensors leave a hole or overlap, or the file is shorter than the header says.
SafetensorsContents read_safetensors(const std::string& path);

// Writes `arrays` (names unique and non-empty) in the given order, the header padded with spaces to a multiple
// of 8 bytes as the reference writer does; atomically (nothing at `path` unless complete).
void write_safetensors(const std::string& path, const std::vector<NamedArray>& arrays,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace dgr::data
