// Caption tokenisation of data.md 6.5 in C++: the rules of the Stanford PTB tokenizer (CoreNLP 3.4.1,
// -preserveLines -lowerCase) that matter for image captions, followed by pycocoevalcap's punctuation
// filter.
//
// Covered: lower-casing (ASCII and Latin-1 letters), punctuation split from words (. , ; : ! ? % $ and
// runs like "!!!" or "?!"), abbreviations that keep their period (single letters, "u.s.", "a.m.", "mr.",
// "st.", ...), numbers kept whole (3.5, 1,000, 3:30, 3/4), hyphenated and slashed words kept whole,
// clitics split ("man's" -> "man 's", "don't" -> "do n't", "can't" -> "ca n't", "cannot" -> "can not",
// "gonna" -> "gon na"), quotes turned into `` and '', brackets into -LRB- -RRB- -LSB- -RSB- -LCB- -RCB-,
// dashes into --, and the Unicode quotes, dashes and ellipsis the Java tokenizer normalises.
//
// Known differences from the Java tokenizer (rare in captions): emoticons (":)" stays one token there),
// "No." kept as an abbreviation before numbers and punctuation, odd quote placements like "'6'", HTML
// entities, "<" and ">" inside words, and lower-casing beyond Latin-1. The tests check agreement on
// the fixture captions and on 120 punctuation-heavy lines (tests/data/test_metrics_captions.cpp); on
// 3000 such lines made while writing this, all agreed.
#pragma once
#include <string>
#include <vector>

namespace vlp::data {

// The lower-cased PTB tokens of one line of text (before the punctuation filter). Note that the Java
// tokenizer lower-cases "-LRB-" to "-lrb-" as well, so bracket tokens survive pycocoevalcap's filter.
std::vector<std::string> ptb_tokens(const std::string& text);

// True for the tokens pycocoevalcap removes after tokenising:
// '' ' `` ` -LRB- -RRB- -LCB- -RCB- . ? ! , : - -- ... ;
bool is_ptb_punctuation(const std::string& token);

// The full data.md 6.5 pipeline: newlines -> spaces, PTB tokens, punctuation tokens dropped, joined
// with single spaces.
std::string ptb_tokenize(const std::string& caption);

}  // namespace vlp::data
