// The identifier views of MINDER (method.md section 2) as token sequences: which marker a source ends
// with, and what a target of each view looks like. Shared by stage-1 training and retrieval so that both
// build exactly the same sequences.
//   source  = query tokens (truncated to max_source - 2) + view marker + eos; with BART's tokenizer
//             <s> + query tokens + the view's text (" || title || +") + </s> (Note [Markers with BART])
//   title   : target = title tokens (at most max_title - 1) + "@@"; in the index it follows a boundary
//   body    : target = a span of exactly body_length tokens of the body
//   pq      : target = "||" + pseudo-query tokens + "@@"
// Targets carry no bos and no eos: the decoder input is decoder_start + target[:-1] and a key's score is the sum of
// log p over exactly its tokens.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "retrieval/tokenizer.h"

namespace dgr::retrieval {

enum class View { title = 0, body = 1, pq = 2 };
constexpr int kNumViews = 3;
const char* view_name(View view);  // "title", "body", "pq"
View parse_view(const std::string& name);  // throws ConfigError for anything else

struct ViewLimits {
  int max_source = 64;   // tokens in a source, marker and eos included
  int max_title = 15;    // tokens in a title target, "@@" included
  int body_length = 10;  // tokens in a body span
  int max_pq = 30;       // tokens in a pseudo-query target, "||" and "@@" included
};

int32_t view_marker(View view, const SpecialTokens& special);
std::vector<int32_t> make_source(std::span<const int32_t> query, View view, const SpecialTokens& special,
                                 const ViewLimits& limits);

// A passage as the tokenizer sees it, and its sequence in the FM-index (method.md section 2):
// title @@ body [|| pq @@]...
struct PassageTokens {
  std::vector<int32_t> title;
  std::vector<int32_t> body;
  std::vector<std::vector<int32_t>> pseudo_queries;
};
std::vector<int32_t> index_sequence(const PassageTokens& passage, const SpecialTokens& special);
std::vector<int32_t> title_target(const PassageTokens& passage, const SpecialTokens& special,
                                  const ViewLimits& limits);

}  // namespace dgr::retrieval
