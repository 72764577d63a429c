// Driver of tests/bart_bpe_test.sh: encodes every case of a cases.jsonl (from bart_bpe_reference.py) with
// dgr's BART tokenizer and compares the ids with transformers' BartTokenizer ("slow") and BartTokenizerFast
// ("fast"), element by element; also decode(encode(text)) == text. Prints the first mismatches and a count
// per kind of case; exit 1 on any mismatch. Usage: bart_bpe_compare TOKENIZER_DIR CASES_JSONL
#include <fmt/format.h>

#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "retrieval/bart_bpe.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: bart_bpe_compare TOKENIZER_DIR CASES_JSONL\n";
    return 2;
  }
  const auto bpe = dgr::retrieval::BartBpe::load(argv[1]);
  std::ifstream in(argv[2]);
  std::string line;
  struct Count { int cases = 0, ids_differ = 0, round_trip_differs = 0; size_t ids = 0; };
  std::map<std::string, Count> counts;
  int shown = 0;
  while (std::getline(in, line)) {
    const auto c = nlohmann::json::parse(line);
    const std::string kind = c.at("kind"), text = c.at("text");
    Count& n = counts[kind];
    ++n.cases;
    const std::vector<int32_t> ids = bpe.encode(text);
    n.ids += ids.size();
    for (const char* reference : {"slow", "fast"}) {
      const auto expected = c.at(reference).get<std::vector<int32_t>>();
      if (ids == expected) continue;
      ++n.ids_differ;
      if (shown++ < 5)
        std::cout << fmt::format("MISMATCH ({}) {}: dgr [{}] vs [{}]\n", reference, c.at("text").dump(),
                                 fmt::join(ids, " "), fmt::join(expected, " "));
    }
    if (bpe.decode(ids) != text) {
      ++n.round_trip_differs;
      if (shown++ < 5) std::cout << fmt::format("ROUND TRIP {}: decoded {}\n", c.at("text").dump(),
                                                nlohmann::json(bpe.decode(ids)).dump());
    }
  }
  bool ok = !counts.empty();
  for (const auto& [kind, n] : counts) {
    std::cout << fmt::format("{}: {} texts, {} ids; differing from transformers (slow + fast): {}; decode(encode(x)) "
                             "!= x: {}\n", kind, n.cases, n.ids, n.ids_differ, n.round_trip_differs);
    ok = ok && n.ids_differ == 0 && n.round_trip_differs == 0 && n.cases > 0;
  }
  std::cout << (ok ? "ok\n" : "FAILED\n");
  return ok ? 0 : 1;
}
