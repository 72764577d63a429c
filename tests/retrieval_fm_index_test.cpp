// Tests of the FM-index (retrieval/fm_index.h) against a brute-force scan of the text B d_0 B d_1 ... B:
// counts, next-token extensions, occurrence positions, title anchoring, save/load, damaged files.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/temp_dir.h"
#include "common/error.h"
#include "retrieval/fm_index.h"

namespace dgr::retrieval {
namespace {

namespace fs = std::filesystem;
using Tokens = std::vector<int32_t>;

class TempDir : public dgr::testing::TempDir {
 public:
  TempDir() : dgr::testing::TempDir("dgr_fm_index_test") {}
};

// The text and the brute-force answers the index must give.
struct Reference {
  Tokens text;                  // B d_0 B d_1 ... B
  std::vector<size_t> starts;   // T position of each passage's first token
  Reference(const std::vector<Tokens>& passages, int32_t boundary) {
    for (const auto& p : passages) {
      text.push_back(boundary);
      starts.push_back(text.size());
      text.insert(text.end(), p.begin(), p.end());
    }
    text.push_back(boundary);
  }
  std::vector<size_t> positions(const Tokens& pattern) const {
    std::vector<size_t> out;
    if (pattern.size() > text.size()) return out;
    for (size_t s = 0; s + pattern.size() <= text.size(); ++s) {
      if (std::equal(pattern.begin(), pattern.end(), text.begin() + static_cast<std::ptrdiff_t>(s))) out.push_back(s);
    }
    return out;
  }
  FMIndex::Occurrence occurrence(size_t s) const {
    // The passage whose boundary (start - 1) is the last one at or before s.
    size_t doc = 0;
    while (doc + 1 < starts.size() && starts[doc + 1] - 1 <= s) ++doc;
    return {static_cast<int32_t>(doc), static_cast<int32_t>(static_cast<int64_t>(s) - static_cast<int64_t>(starts[doc]))};
  }
  std::map<int32_t, uint64_t> next_tokens(const Tokens& pattern) const {
    std::map<int32_t, uint64_t> out;
    for (size_t s : positions(pattern)) {
      if (s + pattern.size() < text.size()) ++out[text[s + pattern.size()]];
    }
    return out;
  }
};

std::vector<std::pair<int32_t, int32_t>> as_pairs(const std::vector<FMIndex::Occurrence>& occurrences) {
  std::vector<std::pair<int32_t, int32_t>> out;
  for (const auto& o : occurrences) out.emplace_back(o.doc, o.offset);
  std::sort(out.begin(), out.end());
  return out;
}

// Every answer of `index` for `pattern` equals the brute-force one.
void expect_matches(const FMIndex& index, const Reference& ref, const Tokens& pattern) {
  SCOPED_TRACE(::testing::PrintToString(pattern));
  auto positions = ref.positions(pattern);
  FMIndex::Range range = index.find(pattern);
  EXPECT_EQ(index.count(pattern), positions.size());
  EXPECT_EQ(range.count(), positions.size());

  std::vector<std::pair<int32_t, int32_t>> expected;
  std::vector<int32_t> docs;
  for (size_t s : positions) {
    if (s == ref.text.size()) continue;  // the empty string at the end of the text is not located
    auto o = ref.occurrence(s);
    expected.emplace_back(o.doc, o.offset);
    docs.push_back(o.doc);
  }
  std::sort(expected.begin(), expected.end());
  std::sort(docs.begin(), docs.end());
  docs.erase(std::unique(docs.begin(), docs.end()), docs.end());
  EXPECT_EQ(as_pairs(index.locate(range)), expected);
  EXPECT_EQ(index.passages_containing(pattern), docs);
  if (!positions.empty()) {
    EXPECT_EQ(index.locate(range, 1).size(), 1u);
  }

  auto next = ref.next_tokens(pattern);
  auto extensions = index.extensions(range);
  std::map<int32_t, uint64_t> got;
  int32_t previous = -1;
  for (const auto& e : extensions) {
    EXPECT_GT(e.token, previous) << "extensions not in increasing token order";
    previous = e.token;
    got[e.token] = e.range.count();
    Tokens longer = pattern;
    longer.push_back(e.token);
    FMIndex::Range direct = index.find(longer);
    EXPECT_EQ(e.range.lo, direct.lo);
    EXPECT_EQ(e.range.hi, direct.hi);
    EXPECT_EQ(e.range.length, longer.size());
    FMIndex::Range stepped = index.extend(range, e.token);
    EXPECT_EQ(stepped.lo, direct.lo);
    EXPECT_EQ(stepped.hi, direct.hi);
  }
  EXPECT_EQ(got, next);
}

std::vector<Tokens> random_passages(std::mt19937& rng, int n, int32_t boundary, int alphabet) {
  std::vector<Tokens> passages;
  std::uniform_int_distribution<int> length(1, 12);
  std::uniform_int_distribution<int32_t> token(0, alphabet - 1);
  for (int i = 0; i < n; ++i) {
    Tokens p(static_cast<size_t>(i % 5 == 0 ? 1 : length(rng)));
    for (auto& t : p) {
      do t = token(rng); while (t == boundary);
    }
    passages.push_back(p);
  }
  return passages;
}

std::vector<Tokens> patterns_for(std::mt19937& rng, const Reference& ref, int32_t alphabet) {
  std::vector<Tokens> patterns = {{}};
  std::uniform_int_distribution<size_t> start(0, ref.text.size() - 1);
  std::uniform_int_distribution<int> length(1, 6);
  std::uniform_int_distribution<int32_t> token(0, alphabet);  // alphabet itself never occurs
  for (int i = 0; i < 60; ++i) {  // substrings of the text: present, often with boundaries
    size_t s = start(rng);
    size_t m = std::min<size_t>(static_cast<size_t>(length(rng)), ref.text.size() - s);
    patterns.emplace_back(ref.text.begin() + static_cast<std::ptrdiff_t>(s),
                          ref.text.begin() + static_cast<std::ptrdiff_t>(s + m));
  }
  for (int i = 0; i < 40; ++i) {  // random strings: often absent
    Tokens p(static_cast<size_t>(length(rng)));
    for (auto& t : p) t = token(rng);
    patterns.push_back(p);
  }
  for (int32_t t = -1; t <= alphabet + 1; ++t) patterns.push_back({t});
  patterns.push_back(ref.text);  // the whole text
  return patterns;
}

TEST(FMIndex, MatchesBruteForceOnRandomCorpora) {
  for (uint32_t seed : {1u, 2u, 3u, 4u, 5u}) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 rng(seed);
    const int alphabet = 5;
    const int32_t boundary = static_cast<int32_t>(seed % alphabet);  // sometimes 0, sometimes in the middle
    auto passages = random_passages(rng, 10 + static_cast<int>(seed) * 7, boundary, alphabet);
    Reference ref(passages, boundary);
    FMIndex index = FMIndex::build(passages, boundary);
    ASSERT_EQ(index.num_passages(), passages.size());
    EXPECT_EQ(index.total_tokens(), ref.text.size());
    EXPECT_EQ(index.boundary(), boundary);
    EXPECT_EQ(index.full().count(), ref.text.size() + 1);
    for (size_t d = 0; d < passages.size(); ++d) {
      auto span = index.passage(static_cast<int32_t>(d));
      EXPECT_EQ(Tokens(span.begin(), span.end()), passages[d]);
    }
    for (const auto& pattern : patterns_for(rng, ref, alphabet)) expect_matches(index, ref, pattern);
  }
}

TEST(FMIndex, SinglePassageAndLargeTokenIds) {
  std::vector<Tokens> passages = {{2147483646}, {7, 2147483646, 7}};
  FMIndex index = FMIndex::build(passages, 1000);
  Reference ref(passages, 1000);
  for (const Tokens& p : std::vector<Tokens>{{2147483646}, {7}, {1000, 7}, {2147483646, 1000}, {}, {5}})
    expect_matches(index, ref, p);
  FMIndex one = FMIndex::build({{3}}, 0);
  Reference ref_one({{3}}, 0);
  for (const Tokens& p : std::vector<Tokens>{{0}, {3}, {0, 3, 0}, {0, 0}, {}}) expect_matches(one, ref_one, p);
}

// A title key `B title @@` matches whole titles only: not a title that merely starts with it, and not the
// same tokens elsewhere in a body.
TEST(FMIndex, TitleKeysAreAnchored) {
  const int32_t end = 6, boundary = 7;
  std::vector<Tokens> titles = {{1}, {1, 2}, {1, 2, 3}, {2}, {1, 2}, {3, 1}};
  std::mt19937 rng(11);
  std::uniform_int_distribution<int32_t> body_token(0, 5);
  std::vector<Tokens> passages;
  for (size_t i = 0; i < 30; ++i) {
    Tokens p = titles[i % titles.size()];
    p.push_back(end);
    for (int k = 0; k < 8; ++k) p.push_back(body_token(rng));  // bodies contain the title tokens too
    passages.push_back(p);
  }
  FMIndex index = FMIndex::build(passages, boundary);
  Reference ref(passages, boundary);
  for (const auto& title : titles) {
    Tokens key = {boundary};
    key.insert(key.end(), title.begin(), title.end());
    key.push_back(end);
    std::vector<int32_t> expected;
    for (size_t i = 0; i < passages.size(); ++i) {
      if (titles[i % titles.size()] == title) expected.push_back(static_cast<int32_t>(i));
    }
    EXPECT_EQ(index.passages_containing(key), expected);
    EXPECT_EQ(index.count(key), expected.size());
    for (const auto& o : index.locate(index.find(key))) EXPECT_EQ(o.offset, -1);
    expect_matches(index, ref, key);
  }
  // Title prefixes from a boundary: the allowed next tokens after `B 1` are 2 and @@ only.
  auto extensions = index.extensions(index.find(Tokens{boundary, 1}));
  std::vector<int32_t> next;
  for (const auto& e : extensions) next.push_back(e.token);
  EXPECT_EQ(next, (std::vector<int32_t>{2, end}));
}

TEST(FMIndex, SaveLoadRoundTrip) {
  TempDir dir;
  std::mt19937 rng(7);
  auto passages = random_passages(rng, 40, 4, 6);
  FMIndex index = FMIndex::build(passages, 4);
  Reference ref(passages, 4);
  const std::string path = dir.file("fm.bin");
  index.save(path);
  EXPECT_FALSE(fs::exists(path + ".tmp." + std::to_string(::getpid())));
  FMIndex loaded = FMIndex::load(path);
  EXPECT_EQ(loaded.num_passages(), index.num_passages());
  EXPECT_EQ(loaded.total_tokens(), index.total_tokens());
  EXPECT_EQ(loaded.boundary(), 4);
  for (size_t d = 0; d < passages.size(); ++d) {
    auto span = loaded.passage(static_cast<int32_t>(d));
    EXPECT_EQ(Tokens(span.begin(), span.end()), passages[d]);
  }
  for (const auto& pattern : patterns_for(rng, ref, 6)) {
    expect_matches(loaded, ref, pattern);
    auto a = index.find(pattern), b = loaded.find(pattern);
    EXPECT_EQ(a.lo, b.lo);
    EXPECT_EQ(a.hi, b.hi);
  }
}

template <typename Fn>
std::string data_error_message(Fn&& fn) {
  try {
    fn();
  } catch (const DataError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("wrong exception type: ") + e.what();
  }
  return "no exception";
}

TEST(FMIndex, DamagedFilesAreDataErrorsNamingTheFile) {
  TempDir dir;
  std::mt19937 rng(3);
  FMIndex index = FMIndex::build(random_passages(rng, 30, 0, 5), 0);
  const std::string path = dir.file("fm.bin");
  index.save(path);
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto write = [&](const std::string& name, const std::string& content) {
    std::ofstream out(dir.file(name), std::ios::binary);
    out << content;
    return dir.file(name);
  };
  for (size_t keep : {bytes.size() - 1, bytes.size() / 2, size_t{70}, size_t{40}, size_t{0}}) {
    std::string truncated = write("truncated.bin", bytes.substr(0, keep));
    std::string message = data_error_message([&] { FMIndex::load(truncated); });
    EXPECT_NE(message.find(truncated), std::string::npos) << message;
    EXPECT_NE(message.find("dgr index"), std::string::npos) << message;
  }
  std::string garbage = write("garbage.bin", "this is not an index\n");
  std::string message = data_error_message([&] { FMIndex::load(garbage); });
  EXPECT_NE(message.find(garbage), std::string::npos) << message;
  EXPECT_NE(message.find("not a dgr FM-index"), std::string::npos) << message;

  std::string flipped_bytes = bytes;
  flipped_bytes[bytes.size() / 3] ^= 0x40;
  std::string flipped = write("flipped.bin", flipped_bytes);
  message = data_error_message([&] { FMIndex::load(flipped); });
  EXPECT_NE(message.find(flipped), std::string::npos) << message;

  std::string missing = dir.file("missing.bin");
  message = data_error_message([&] { FMIndex::load(missing); });
  EXPECT_NE(message.find(missing), std::string::npos) << message;
}

TEST(FMIndex, BuildRejectsBadInput) {
  std::string message = data_error_message([] { FMIndex::build({{1, 2}, {3, 9, 4}}, 9); });
  EXPECT_NE(message.find("passage 1"), std::string::npos) << message;
  EXPECT_NE(message.find("boundary"), std::string::npos) << message;
  EXPECT_THROW(FMIndex::build({{1, -2}}, 9), DataError);
  EXPECT_THROW(FMIndex::build({{1}}, -1), DataError);
  EXPECT_THROW(FMIndex::build({}, 0), DataError);
}

}  // namespace
}  // namespace dgr::retrieval
