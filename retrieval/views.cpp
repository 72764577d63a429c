#include "retrieval/views.h"

#include <algorithm>

#include "common/error.h"

namespace dgr::retrieval {

const char* view_name(View view) {
  switch (view) {
    case View::title: return "title";
    case View::body: return "body";
    case View::pq: return "pq";
  }
  return "?";
}

View parse_view(const std::string& name) {
  if (name == "title") return View::title;
  if (name == "body") return View::body;
  if (name == "pq") return View::pq;
  throw ConfigError("unknown view '" + name + "': use title, body or pq");
}

int32_t view_marker(View view, const SpecialTokens& special) {
  switch (view) {
    case View::title: return special.title_view;
    case View::body: return special.body_view;
    case View::pq: return special.pq_view;
  }
  return special.unk;
}

std::vector<int32_t> make_source(std::span<const int32_t> query, View view, const SpecialTokens& special,
                                 const ViewLimits& limits) {
  // [source_start] query[:keep] marker eos, where the marker is one reserved token or the view's text.
  const auto& text = special.view_text[static_cast<size_t>(view)];
  const size_t frame = (special.source_start >= 0 ? 1 : 0) + (text.empty() ? 1 : text.size()) + 1;
  DGR_CHECK_AS(ConfigError, limits.max_source >= static_cast<int>(frame) + 1,
               "max_source must be at least {} (got {})", frame + 1, limits.max_source);
  size_t keep = std::min(query.size(), static_cast<size_t>(limits.max_source) - frame);
  std::vector<int32_t> source;
  source.reserve(keep + frame);
  if (special.source_start >= 0) source.push_back(special.source_start);
  source.insert(source.end(), query.begin(), query.begin() + static_cast<std::ptrdiff_t>(keep));
  if (text.empty()) {
    source.push_back(view_marker(view, special));
  } else {
    source.insert(source.end(), text.begin(), text.end());
  }
  source.push_back(special.eos);
  return source;
}

std::vector<int32_t> index_sequence(const PassageTokens& passage, const SpecialTokens& special) {
  std::vector<int32_t> out;
  out.reserve(passage.title.size() + passage.body.size() + 2);
  out.insert(out.end(), passage.title.begin(), passage.title.end());
  out.push_back(special.end_id);
  out.insert(out.end(), passage.body.begin(), passage.body.end());
  for (const auto& pq : passage.pseudo_queries) {
    out.push_back(special.pq_start);
    out.insert(out.end(), pq.begin(), pq.end());
    out.push_back(special.end_id);
  }
  return out;
}

std::vector<int32_t> title_target(const PassageTokens& passage, const SpecialTokens& special,
                                  const ViewLimits& limits) {
  // A title longer than max_title - 1 is cut: the target is then a prefix of the indexed `B title @@`
  // without "@@", which still occurs in the index, so constrained decoding can produce it.
  size_t keep = std::min(passage.title.size(), static_cast<size_t>(std::max(limits.max_title - 1, 1)));
  std::vector<int32_t> target(passage.title.begin(), passage.title.begin() + static_cast<std::ptrdiff_t>(keep));
  if (keep == passage.title.size()) target.push_back(special.end_id);
  return target;
}

}  // namespace dgr::retrieval
