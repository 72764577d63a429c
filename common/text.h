// Small text helpers shared by the readers and the data builder: UTF-8 checks, splitting, trimming.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace dgr::text {

// True when `s` is well-formed UTF-8 (no overlong forms, no surrogates). On false, `*bad_offset` (if
// given) is the byte offset of the first bad sequence.
bool is_valid_utf8(std::string_view s, size_t* bad_offset = nullptr);

// Splits on every occurrence of `sep` (empty fields kept).
std::vector<std::string_view> split(std::string_view s, char sep);

// Splits on runs of ASCII whitespace (no empty fields).
std::vector<std::string_view> split_ws(std::string_view s);

std::string_view trim(std::string_view s);

// Collapses every run of ASCII whitespace to one space and trims the ends.
std::string collapse_ws(std::string_view s);

// One TSV field: tabs and line breaks (\t, \n, \r) become spaces, nothing else changes.
std::string tsv_field(std::string s);

// ASCII lower-case copy.
std::string to_lower(std::string_view s);

}  // namespace dgr::text
