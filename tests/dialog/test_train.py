import pytest

from dataengine.dialog.conversation import Conversation, Turn
from dataengine.errors import DataError
from dataengine.train.sft import check_trainable


def _conv(cid, turns):
    return Conversation(id=cid, image="pool/x.png", turns=[Turn(user=u, assistant=a, source="t", format="word", item=f"{cid}-{k}")
                                                        for k, (u, a) in enumerate(turns)])


def test_a_conversation_that_cannot_be_trained_on_is_named(tiny_vlm):
    check_trainable(tiny_vlm, [_conv("ok", [("What is it?", "ball")] * 3)], "short_answer")
    with pytest.raises(DataError, match="conversation c2: item c2-1: empty answer"):
        check_trainable(tiny_vlm, [_conv("c1", [("Q?", "a")]), _conv("c2", [("Q?", "a"), ("Q2?", " ")])], "short_answer")
    limit = tiny_vlm.model.config.get_text_config().max_position_embeddings
    long = _conv("long", [("What colour is the small ball at the top left?", "red")] * (limit // 8))
    with pytest.raises(DataError, match=rf"conversation long: \d+ tokens with its image, more than the model's {limit}"):
        check_trainable(tiny_vlm, [long], "short_answer")
