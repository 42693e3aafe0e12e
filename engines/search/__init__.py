"""Listing search: the Thai + English analyzer (:mod:`engines.search.analyzer`), the keyword index with
query understanding, the fallback chain and the text-relevance features (:mod:`engines.search.index`)."""
