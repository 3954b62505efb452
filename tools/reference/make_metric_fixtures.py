#!/usr/bin/env python3
"""Reference values for vlpeft's metric tests (tests/fixtures/data/metrics/).

Caption metrics come from the pinned pycocoevalcap (BLEU-1..4, ROUGE-L, CIDEr-D) after its Java PTB
tokenizer (needs `java` on the PATH). The official VQA evaluation (GT-Vision-Lab/VQA, vqaEval.py) is not
on PyPI, so this script re-implements both of its variants from data.md 6.1; the contractions table is
read from data/vqa_contractions.cpp, which holds the official table verbatim.

Usage: tools/reference/.venv/bin/python tools/reference/make_metric_fixtures.py
"""
import json
import os
import random
import re
import sys

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "data", "metrics")

# ---- VQA accuracy (re-implementation of the official evaluation) --------------------------------------

PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = {"a", "an", "the"}
ASCII_SPACE = " \t\n\r\x0b\x0c"  # the reference ran on Python 2 byte strings: ASCII whitespace and case


def load_contractions():
    src = open(os.path.join(ROOT, "data", "vqa_contractions.cpp"), encoding="utf-8").read()
    pairs = re.findall(r'\{"((?:[^"\\]|\\.)*)", "((?:[^"\\]|\\.)*)"\}', src)
    table = dict(pairs)
    assert len(table) == 120, len(table)
    return table


CONTRACTIONS = load_contractions()


def ascii_lower(s):
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in s)


def process_punctuation(text):
    digit_comma_digit = any(text[i] == "," and text[i - 1] in "0123456789" and text[i + 1] in "0123456789"
                            for i in range(1, len(text) - 1))
    out = text
    for p in PUNCTUATION:
        if (p + " ") in text or (" " + p) in text or digit_comma_digit:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    result, removed = [], 0
    for i, c in enumerate(out):
        next_is_digit = i + 1 < len(out) and out[i + 1] in "0123456789"
        if c == "." and not next_is_digit and removed < 32:
            removed += 1
            continue
        result.append(c)
    return "".join(result)


def process_digit_article(text):
    words = []
    for w in re.split("[" + re.escape(ASCII_SPACE) + "]+", ascii_lower(text)):
        if not w:
            continue
        w = NUMBER_WORDS.get(w, w)
        if w not in ARTICLES:
            words.append(w)
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def clean(s):
    return s.replace("\n", " ").replace("\t", " ").strip(ASCII_SPACE)


def vqa_accuracy(prediction, answers, variant):
    gt = list(answers)
    if variant == "legacy":
        pred = process_digit_article(process_punctuation(clean(prediction)))
        if len(set(gt)) > 1:
            gt = [process_punctuation(a) for a in gt]
    else:
        gt = [clean(a) for a in gt]
        pred = clean(prediction)
        if len(set(gt)) > 1:
            gt = [process_digit_article(process_punctuation(a)) for a in gt]
            pred = process_digit_article(process_punctuation(pred))
    accs = []
    for k in range(len(gt)):
        others = gt[:k] + gt[k + 1:]
        accs.append(min(1.0, sum(1 for a in others if a == pred) / 3.0))
    return sum(accs) / len(accs)


def vqa_fixture():
    texts = ["Three.", "1,000", "black/white", "yes, it is", "The dog's bowl", "dont know", "2.5", "none",
             "A Red-and-White bus!", "(left) side", "@home", "hello ; world", "x-ray", "  Two\tcats\n",
             "it's 3:30 p.m.", "U.S.A.", "a.b.c.d.e", "..." * 15, "youre right", "Im here", "I'm here",
             "somebody'd", "whats up?", "an apple and the pear", "ten 10 Ten", "1,2,3 go", "50%", "e=mc2",
             "he said \"no\"", "C++ and C#", "under_score", "back\\slash", "<tag>", "`quoted`", "wow!!", "no,no",
             "3 , 4", "9.", "end.", ".5", "one.two", "shouldnt've", "yall'll", "twas"]
    normalisation = [{"text": t, "punctuation": process_punctuation(t), "digit_article": process_digit_article(t),
                      "answer_key": process_digit_article(process_punctuation(t)).replace(",", "")} for t in texts]

    cases = []

    def add(answers, prediction):
        assert len(answers) == 10
        cases.append({"answers": answers, "prediction": prediction,
                      "legacy": vqa_accuracy(prediction, answers, "legacy"),
                      "official": vqa_accuracy(prediction, answers, "official")})

    add(["2"] * 4 + ["3"] * 3 + ["4"] * 2 + ["1"], "Three.")  # data.md worked example: 0.9
    add(["2"] * 10, "two")  # legacy 1, official 0
    add(["2"] * 10, "2")
    add(["yes"] * 10, "Yes")
    add(["yes"] * 9 + ["no"], "Yes")
    add(["red"] * 2 + ["dark red"] * 8, "red")
    add(["black and white"] * 5 + ["black/white"] * 3 + ["black & white"] * 2, "black/white")
    add(["1,000"] * 3 + ["1000"] * 7, "1,000")
    add(["the dog"] * 4 + ["dog"] * 6, "a dog")
    add(["don't know"] * 3 + ["dont know"] * 7, "dont know")
    add(["2.5"] * 4 + ["2 5"] * 6, "2.5")
    add(["tennis racket"] * 6 + ["racket"] * 4, "tennis racket\n")
    add(["tennis racket"] * 10, " tennis racket\t")
    add(["One"] * 5 + ["1"] * 5, "one")
    add(["skiing"] * 10, "ski")
    add(["left"] * 3 + ["(left)"] * 7, "left")
    add(["none"] * 4 + ["0"] * 6, "zero")
    add(["it's"] * 5 + ["it is"] * 5, "its")
    add(["what's up"] * 2 + ["whats up"] * 8, "whats up")
    add(["Yes"] * 6 + ["yes"] * 4, "yes")
    add(["frisbee"] * 10, "Frisbee")
    rng = random.Random(9595)
    pool = ["yes", "no", "2", "two", "Two", "3", "red", "Red.", "blue", "white", "black and white", "the cat",
            "cat", "a cat", "1,000", "1000", "dont know", "don't know", "left", "left side", "(left)", "x-ray",
            "tennis", "Tennis!", "none", "0", "pizza", "baseball bat", "bat"]
    for _ in range(40):
        answers = [rng.choice(pool[:rng.randint(3, len(pool))]) for _ in range(10)]
        prediction = rng.choice(pool + ["Three", "two.", "A cat", "Left", "nothing"])
        add(answers, prediction)
    return {"normalisation": normalisation, "accuracy": cases}


# ---- captions ----------------------------------------------------------------------------------------

REFERENCES = [
    ["A man riding a wave on top of a surfboard.", "A surfer rides a large wave in the ocean.",
     "A person on a surf board riding a wave.", "Man in a wetsuit surfing on a big wave.",
     "The surfer is catching a wave near the shore."],
    ["Two dogs playing with a frisbee in the grass.", "A pair of dogs chase a red frisbee.",
     "Dogs are playing in a field with a Frisbee.", "two brown dogs running after a flying disc",
     "A black dog and a white dog play in the park."],
    ["A plate of food with broccoli and rice.", "A dinner plate topped with chicken, rice and broccoli.",
     "Rice, broccoli, and meat on a white plate.", "A healthy meal is served on a plate.",
     "A close up of a plate of food on a table."],
    ["A red double-decker bus driving down a street.", "A double decker bus on a city street.",
     "The big red bus is parked by the curb.", "A London bus travels down the road.",
     "A tall red bus with two levels on the street."],
    ["A cat sleeping on top of a laptop keyboard.", "A cat is lying on a laptop computer.",
     "The kitten naps on the keys of the notebook.", "A gray cat lays across an open laptop.",
     "cat asleep on someone's computer"],
    ["A giraffe standing next to a tall tree.", "A giraffe eating leaves from a tree.",
     "The giraffe is reaching up to eat from the branches.", "A tall giraffe in a zoo enclosure.",
     "A single giraffe stands near some trees."],
    ["A baseball player swinging a bat at a ball.", "A batter swings at a pitch during a game.",
     "The man is hitting the baseball with his bat.", "A baseball game in progress with a batter at home plate.",
     "A player in a white uniform swings the bat."],
    ["A kitchen with wooden cabinets and a stove.", "A small kitchen with a white refrigerator.",
     "The kitchen has a sink, an oven and cabinets.", "An empty kitchen with tile floors.",
     "A clean kitchen with stainless steel appliances."],
    ["A woman holding an umbrella in the rain.", "A lady walks with a black umbrella on a rainy day.",
     "A person with an umbrella walking down the sidewalk.", "Woman carrying an umbrella on a wet street.",
     "A girl is holding a pink umbrella."],
    ["A train traveling down tracks next to a forest.", "A passenger train on the railroad tracks.",
     "The train is moving past some trees.", "A long train going down the track.",
     "A yellow and blue train pulling into a station."],
    ["Two zebras standing in a grassy field.", "A couple of zebras grazing on grass.",
     "Zebras eating grass on the savanna.", "Two zebra's standing next to each other.",
     "A pair of zebras in the wild."],
    ["A pizza with pepperoni and cheese on a table.", "A large pizza sitting on a wooden table.",
     "A pepperoni pizza cut into eight slices.", "There is a whole pizza on the pan.",
     "A cheesy pizza is ready to be eaten."],
    ["A boy flying a kite on the beach.", "A child is flying a colorful kite.",
     "A kid holds the string of a kite at the beach.", "A young boy with a kite near the ocean.",
     "The boy's kite is high in the sky."],
    ["A bathroom with a toilet and a sink.", "A white toilet next to a bathroom sink.",
     "The bathroom has a shower, toilet and sink.", "A small bathroom with blue tiles.",
     "A clean restroom with a mirror above the sink."],
    ["An elephant walking through a dirt field.", "A large elephant walking in the dirt.",
     "The elephant is walking near some trees.", "A gray elephant in its natural habitat.",
     "One elephant walks alone across the field."],
    ["A man skiing down a snowy slope.", "A skier going down a mountain.",
     "A person on skis in the snow.", "The skier is racing downhill.",
     "Someone skiing on a snow-covered hill."],
    ["A clock tower in the middle of a city.", "A tall tower with a clock on it.",
     "The clock on the building reads 3:30.", "A large clock tower under a blue sky.",
     "An old stone tower with a clock face."],
    ["A man and a woman cutting a cake.", "A couple cuts their wedding cake.",
     "The bride and groom are slicing a white cake.", "Two people cut a cake together at a party.",
     "A newly married couple cutting the cake."],
    ["A horse pulling a carriage down the street.", "A horse-drawn carriage on a city road.",
     "A brown horse is pulling a cart.", "People riding in a carriage pulled by a horse.",
     "The carriage is being pulled by a white horse."],
    ["A laptop, a mouse and a cup of coffee on a desk.", "A desk with a computer and a mug.",
     "An office desk with a laptop computer.", "A workspace with a laptop and coffee.",
     "The laptop is open on the wooden desk."],
]

SYSTEMS = {
    "good": [
        "a man riding a wave on a surfboard", "two dogs playing with a frisbee", "a plate of food with broccoli",
        "a red double decker bus driving down a street", "a cat laying on a laptop computer",
        "a giraffe standing next to a tree", "a baseball player swinging a bat", "a kitchen with a stove and cabinets",
        "a woman holding an umbrella in the rain", "a train on the tracks", "two zebras standing in a field",
        "a pizza on a table", "a boy flying a kite on the beach", "a bathroom with a toilet and sink",
        "an elephant walking in a field", "a man riding skis down a snowy slope", "a clock tower in a city",
        "a man and woman cutting a cake", "a horse pulling a carriage", "a laptop on a desk",
    ],
    "generic": [
        "a man standing on a street", "a dog in the grass", "a plate of food", "a bus", "a cat",
        "an animal near a tree", "a man holding a bat", "a room with a table", "a person walking",
        "a train", "animals in a field", "a pizza", "a person on the beach", "a bathroom", "an elephant",
        "a person in the snow", "a building", "two people standing", "a horse", "a computer",
    ],
    "edge": [
        "",                                        # empty candidate
        "dogs",                                    # one word
        "the the the the the",                     # repeated words (clipping)
        "A red double-decker bus driving down a street.",  # identical to a reference (raw)
        "Cat asleep on someone's computer!",       # clitic, capitals, punctuation
        "giraffe giraffe tree tree tree",          # repetitions of matching words
        "a baseball game in progress with a batter at home plate and a catcher and an umpire watching closely",
        "kitchen",                                  # single matching word
        "...",                                      # punctuation only -> empty after tokenisation
        "a train , a train ; a train : a train",   # punctuation tokens dropped
        "zebras zebras",                            # plural
        "a pepperoni pizza cut into eight slices",  # exact tokenised match
        "purple monkey dishwasher",                 # no overlap
        "The boy's kite is high in the sky",        # exact without the period
        "A (small) bathroom",                       # brackets become -lrb- / -rrb- and stay
        "an elephant",
        "The clock reads 3:30 and 1,000 people watch",
        "a man and a woman cutting a cake",         # exact match
        "horse horse horse horse horse horse horse horse horse horse horse horse",
        "a laptop a mouse and a cup of coffee on a desk",
    ],
}

# Extra sentences for the C++ tokenizer only (checked token by token against the Java tokenizer).
TOKENIZER_EXTRA = [
    "A man's dog doesn't like the colour grey.", "He can't, won't and cannot go; \"quoted\" text (parens) [brackets]!",
    "A T-shirt, a well-known 1,000 people... Mr. Smith at 3:30 p.m. in the U.S.", "Two dogs -- one black & one white -- play",
    "I'm gonna wanna go; they'll we've you'd", "She said 'hello' to him. it's 5 o'clock.", "wow!!! what?! a/b w/ 3/4 100% $5.00",
    "James' dogs' o'neil DON'T ain't '90s x-ray 10-year-old", "the dog's. the dogs'. \"Hi,\" he said. (a dog). [a cat], 'a bird'.",
    "gotta lemme gimme I saw a. plan B. vitamin c. the U.K. dogs's o'clock.", "the dog\u2019s bowl \u201cquoted\u201d \u2018single\u2019 \u00c9COLE na\u00efve \u2014 \u2013 \u2026",
    ".start ,start -start end- end-. co-op's he'd've wouldn't've", "a tree,a dog. A dog.A cat 3.5. 3. 1.. 10.5% 1950's 1990s the 90's",
    "1 2 3 4. a b c. No. Inc. etc cf. fig. approx. ft. lbs.", "skate-boarder's kids' toys. I'll it'll who's that's there's",
    "A+B a=b a*b a_b a;b a:b café a,b 1,5 a.b. Mr Mrs. Dr. vs. A. B.", "it's It's IT'S let's LET'S d'ya 'em 'cause",
    "one-on-one 12:30pm 2x4 3-4 A&W AT&T --- ----", "Two people\tplaying frisbee !?", "a giraffe   standing next to a tree .",
]


def noisy_caption_lines(n, seed=1):
    """Caption-like lines with punctuation glued on in every position (tokenizer stress test)."""
    rng = random.Random(seed)
    words = ("a an the man woman dog cat's kids' people bus train two 3 10 1,000 3.5 3:30 red white black-and-white "
             "well-known T-shirt U.S. Mr. St. it's don't can't won't isn't they're we'll I'm you've he'd O'Brien "
             "rock-n-roll e-mail cell-phone 50% $20 #1 & and/or w/ etc. vs. a.m. p.m. A&W 2x4 1st 90's '90s "
             "giraffe's zebra's gonna cannot y'all 'em").split()
    puncts = [".", ",", "!", "?", ";", ":", "...", " -", " --", "'", '"', ")", "(", "", "", "", ""]
    lines = []
    for _ in range(n):
        toks = []
        for _ in range(rng.randint(3, 12)):
            w = rng.choice(words)
            if rng.random() < 0.15:
                w = w.capitalize()
            p = rng.choice(puncts)
            if p in ["(", '"'] and rng.random() < 0.5:
                w = p + w
            elif p:
                w = w + p
            toks.append(w)
        lines.append(" ".join(toks))
    return lines


def ptb(captions):
    """Java-tokenise a list of captions (order kept)."""
    out = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    return [out[i][0] for i in range(len(captions))]


def caption_fixture():
    refs_tok_flat = ptb([r for refs in REFERENCES for r in refs])
    refs_tok = [refs_tok_flat[5 * i:5 * i + 5] for i in range(len(REFERENCES))]
    gts = {i: refs_tok[i] for i in range(len(REFERENCES))}
    systems = []
    for name, cands in SYSTEMS.items():
        assert len(cands) == len(REFERENCES)
        cands_tok = ptb(cands)
        res = {i: [cands_tok[i]] for i in range(len(cands))}
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        rouge, rouge_per = Rouge().compute_score(gts, res)
        cider, cider_per = Cider().compute_score(gts, res)
        systems.append({"name": name, "candidates": cands, "candidates_tokenized": cands_tok,
                        "bleu": [float(b) for b in bleu], "rouge_l": float(rouge),
                        "rouge_l_per_image": [float(x) for x in rouge_per], "cider_d": float(cider),
                        "cider_d_per_image": [float(x) for x in cider_per]})
    # A subset of images scored alone: idf depends on the evaluated set.
    subset = [0, 1, 2, 3]
    res = {i: [ptb([SYSTEMS["good"][i]])[0]] for i in subset}
    cider_subset, _ = Cider().compute_score({i: gts[i] for i in subset}, res)
    extra = TOKENIZER_EXTRA + noisy_caption_lines(120)
    extra_tok = ptb(extra)
    return {"references": REFERENCES, "references_tokenized": refs_tok, "systems": systems,
            "cider_subset": {"images": subset, "system": "good", "cider_d": float(cider_subset)},
            "tokenizer": [{"raw": r, "tokenized": t} for r, t in zip(extra, extra_tok)]}


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "vqa_eval.json"), "w", encoding="utf-8") as f:
        json.dump(vqa_fixture(), f, indent=1, ensure_ascii=False)
        f.write("\n")
    with open(os.path.join(OUT, "captions.json"), "w", encoding="utf-8") as f:
        json.dump(caption_fixture(), f, indent=1, ensure_ascii=False)
        f.write("\n")
    print("wrote", OUT, file=sys.stderr)


if __name__ == "__main__":
    main()
