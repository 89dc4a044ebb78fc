from skr_ray.tasks.ir.pairs import Pair, split_pairs


def test_split_is_deterministic_disjoint_and_about_nine_to_one():
    pairs = [Pair(f"d{i}", f"q{i}?", f"p{i}") for i in range(1000)]
    train, val = split_pairs(pairs, 0.1, seed=0)
    again_train, again_val = split_pairs(pairs, 0.1, seed=0)
    assert train == again_train and val == again_val
    assert not {p.doc_id for p in train} & {p.doc_id for p in val}
    assert 60 <= len(val) <= 140 and len(train) + len(val) == 1000
