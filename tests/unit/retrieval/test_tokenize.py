from serve_app.retrieval.tokenize import Tokenizer, tokenize


def test_lowercases_drops_stopwords_and_stems():
    assert tokenize("What did Melanie paint in the Paintings?") == ["melani", "paint", "paint"]


def test_possessive_and_single_letters_are_dropped():
    assert tokenize("Caroline's dog, a Labrador") == ["carolin", "dog", "labrador"]


def test_numbers_are_kept():
    assert tokenize("8 May 2023 at 10:30") == ["may", "2023", "10", "30"]


def test_options_switch_stemming_and_stopwords_off():
    raw = Tokenizer(stopwords=None, stem=False)
    assert raw("The running dogs") == ["the", "running", "dogs"]


def test_empty_and_punctuation_only_text():
    assert tokenize("") == []
    assert tokenize("?! ...") == []
