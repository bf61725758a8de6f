from dispatch import catalogue


def test_places_and_adjectives_suggest_their_regions():
    text = ("North Korean envoys met Russian officials; the U.K. and the U.S. objected, "
            "and South Sudanese forces moved north.")
    slugs = {s.slug: s.places for s in catalogue.suggest_regions(text)}
    assert set(slugs["east-asia-pacific"]) == {"North Korea"}
    assert set(slugs["europe-eurasia"]) == {"Russia", "United Kingdom"}
    assert set(slugs["americas"]) == {"United States"}
    # "South Sudanese" is South Sudan, not Sudan.
    assert set(slugs["sub-saharan-africa"]) == {"South Sudan"}


def test_whole_words_only_and_case_sensitive():
    assert catalogue.suggest_regions("the chad of a ballot; Nigeriana; us and them") == []
    # "U.S.A." is one mention of the United States, not "U.S." plus noise.
    (only,) = catalogue.suggest_regions("the U.S.A.")
    assert only.mentions == 1


def test_likely_regions_drop_passing_mentions():
    text = ("Russia and Ukraine " * 5) + "The ship sailed via the Middle East."
    assert catalogue.likely_regions(text) == ["europe-eurasia"]


def test_no_place_no_suggestion():
    assert catalogue.likely_regions("Nothing here names a place.") == []


def test_catalogue_has_the_seven_regions():
    assert set(catalogue.region_names()) == {
        "americas", "europe-eurasia", "middle-east-north-africa", "sub-saharan-africa",
        "south-central-asia", "east-asia-pacific", "global"}
