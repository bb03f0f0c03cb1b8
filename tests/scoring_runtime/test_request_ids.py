import uuid

from scoring_runtime.request_ids import RequestIds


def test_ids_are_uuid_shaped_and_unique_within_and_across_generators() -> None:
    first, second = RequestIds(), RequestIds()
    ids = [first.next() for _ in range(1000)] + [second.next() for _ in range(1000)]
    assert len(set(ids)) == 2000
    for value in ids[:3] + ids[-3:]:
        text = value.decode()
        assert str(uuid.UUID(text)) == text
