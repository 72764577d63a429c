// Constrained beam search with history (method.md section 4). See beam_search.h for the per-view rules.
//
// The search keeps a tree of nodes (parent, token, score, count) instead of token vectors per beam: each
// step appends at most beam_size nodes and the keys are materialised once at the end, so the loop itself
// only reuses a few buffers. Because every node extends a distinct parent by a distinct token, no two nodes
// spell the same prefix, so the history needs no de-duplication within one search.
#include "retrieval/beam_search.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/error.h"

namespace dgr::retrieval {

const char* key_origin_name(KeyOrigin origin) {
  switch (origin) {
    case KeyOrigin::beam: return "beam";
    case KeyOrigin::query_ngram: return "ngram";
    case KeyOrigin::unigram: return "unigram";
  }
  return "?";
}

bool is_reserved_token(int32_t token, const SpecialTokens& special) {
  return token == special.pad || token == special.bos || token == special.eos || token == special.title_view ||
         token == special.body_view || token == special.pq_view || token == special.end_id ||
         token == special.pq_start || token == special.boundary;
}

namespace {

struct Node {
  int32_t parent;  // -1: the empty prefix
  int32_t token;
  uint32_t length;
  double score;
  uint64_t count;
  bool finished;
  bool emit;  // false for the forced "||" of the pseudo-query view
};

struct Beam {
  int32_t node;  // -1: the empty prefix
  uint32_t length;
  double score;
  FMIndex::Range range;
};

struct Candidate {
  double score;
  int32_t beam;  // row of the current log-prob matrix
  int32_t token;
  FMIndex::Range range;
  bool finished;  // the view's end condition holds
  bool done;      // no further extension (finished or at the length limit)
};

// Descending score; ties by beam row then token so that the search is deterministic.
bool better(const Candidate& a, const Candidate& b) {
  if (a.score != b.score) return a.score > b.score;
  if (a.beam != b.beam) return a.beam < b.beam;
  return a.token < b.token;
}

}  // namespace

std::vector<Key> constrained_beam_search(Seq2SeqScorer& model, std::span<const int32_t> source, View view,
                                         const FMIndex& index, const SpecialTokens& special,
                                         const ViewLimits& limits, const BeamOptions& options,
                                         std::vector<float>* first_step_log_probs) {
  DGR_CHECK_AS(ConfigError, options.beam_size >= 1, "beam size must be at least 1 (got {})", options.beam_size);
  uint32_t max_length = 0;
  switch (view) {
    case View::title: max_length = static_cast<uint32_t>(limits.max_title); break;
    case View::body: max_length = static_cast<uint32_t>(limits.body_length); break;
    case View::pq: max_length = static_cast<uint32_t>(limits.max_pq); break;
  }
  DGR_CHECK_AS(ConfigError, static_cast<int>(max_length) >= (view == View::pq ? 2 : 1),
               "the {} view's length limit is too small ({} tokens)", view_name(view), max_length);
  const auto beam_size = static_cast<size_t>(options.beam_size);
  const int32_t vocab = model.vocab_size();

  auto decoding = model.start(source);
  std::vector<int32_t> parents{0};
  std::vector<int32_t> tokens{special.decoder_start};
  const std::vector<float>* log_probs = &decoding->step(parents, tokens);
  DGR_CHECK(log_probs->size() == static_cast<size_t>(vocab),
            "the model returned {} log-probabilities for one beam, expected its vocabulary size {}",
            log_probs->size(), vocab);
  if (first_step_log_probs != nullptr) first_step_log_probs->assign(log_probs->begin(), log_probs->end());

  std::vector<Node> nodes;
  std::vector<Beam> beams, next_beams;
  switch (view) {
    case View::title:
      // Anchored at a boundary: the title is whatever follows `B`, so only title prefixes occur.
      beams.push_back({-1, 0, 0.0, index.extend(index.full(), special.boundary)});
      break;
    case View::body:
      beams.push_back({-1, 0, 0.0, index.full()});
      break;
    case View::pq: {
      // The first token is forced; its log p still counts, as teacher forcing of the key counts it.
      FMIndex::Range range = index.extend(index.full(), special.pq_start);
      if (range.empty()) return {};  // a corpus without pseudo-queries
      double score = (*log_probs)[static_cast<size_t>(special.pq_start)];
      nodes.push_back({-1, special.pq_start, 1, score, range.count(), false, false});
      beams.push_back({0, 1, score, range});
      parents.assign({0});
      tokens.assign({special.pq_start});
      log_probs = &decoding->step(parents, tokens);
      break;
    }
  }
  if (beams.front().range.empty()) return {};

  std::vector<Candidate> candidates;
  constexpr double kNegInf = -std::numeric_limits<double>::infinity();
  while (!beams.empty()) {
    candidates.clear();
    for (size_t b = 0; b < beams.size(); ++b) {
      const Beam& beam = beams[b];
      const float* row = log_probs->data() + b * static_cast<size_t>(vocab);
      const uint32_t length = beam.length + 1;
      for (const FMIndex::Extension& ext : index.extensions(beam.range)) {
        const int32_t token = ext.token;
        const bool is_end = token == special.end_id;
        // Title and pq hypotheses may end with "@@"; nothing else reserved is ever allowed (in the title
        // region the index has only title tokens and "@@" anyway; the body must stay inside one field).
        if (is_reserved_token(token, special) && !(is_end && view != View::body)) continue;
        DGR_CHECK(token >= 0 && token < vocab,
                  "the FM-index holds token {} but the model's vocabulary has {} tokens: index and model "
                  "were built with different tokenizers",
                  token, vocab);
        const double lp = row[token];
        if (!(lp > kNegInf)) continue;  // -inf (masked by the model) or NaN: never a hypothesis
        const bool finished = view == View::body ? length == max_length : is_end;
        candidates.push_back({beam.score + lp, static_cast<int32_t>(b), token, ext.range, finished,
                              finished || length >= max_length});
      }
    }
    if (candidates.empty()) break;

    // Like fairseq: look at the best 2 * beam candidates; those that are done and rank within the beam
    // become finished keys, the best `beam` that are not done continue.
    const size_t window = std::min(candidates.size(), 2 * beam_size);
    std::partial_sort(candidates.begin(), candidates.begin() + static_cast<std::ptrdiff_t>(window),
                      candidates.end(), better);
    next_beams.clear();
    parents.clear();
    tokens.clear();
    for (size_t rank = 0; rank < window; ++rank) {
      const Candidate& c = candidates[rank];
      if (c.done ? rank >= beam_size : next_beams.size() >= beam_size) continue;
      const Beam& parent = beams[static_cast<size_t>(c.beam)];
      nodes.push_back({parent.node, c.token, parent.length + 1, c.score, c.range.count(), c.finished, true});
      if (!c.done) {
        next_beams.push_back({static_cast<int32_t>(nodes.size() - 1), parent.length + 1, c.score, c.range});
        parents.push_back(c.beam);
        tokens.push_back(c.token);
      }
    }
    beams.swap(next_beams);
    if (!beams.empty()) log_probs = &decoding->step(parents, tokens);
  }

  std::vector<Key> keys;
  keys.reserve(nodes.size());
  for (const Node& node : nodes) {
    // Title and pseudo-query keys are complete identifiers only (method.md section 4): an unfinished
    // title is a prefix shared by other titles, not a name of this passage. An identifier longer than the
    // view's limit is complete at the limit (its training target is cut there too).
    if (!node.emit || (view != View::body && !options.partial_keys && !node.finished && node.length < max_length)) continue;
    Key key;
    key.view = view;
    key.origin = KeyOrigin::beam;
    key.score = node.score;
    key.count = node.count;
    key.finished = node.finished;
    key.tokens.resize(node.length);
    const Node* at = &node;
    for (size_t i = node.length; i-- > 0;) {
      key.tokens[i] = at->token;
      at = at->parent >= 0 ? &nodes[static_cast<size_t>(at->parent)] : nullptr;
    }
    if (view == View::title) key.string.push_back(special.boundary);
    key.string.insert(key.string.end(), key.tokens.begin(), key.tokens.end());
    keys.push_back(std::move(key));
  }
  return keys;
}

}  // namespace dgr::retrieval
