"""Tests for billing.domain.replies."""
from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.domain.replies import (
    INTENTS,
    NEGOTIATE,
    OPT_OUT,
    OTHER,
    PAID,
    QUESTION,
    Classification,
    classify,
    is_opt_back_in,
    normalize,
)
from tests.unit.replies_labelled import HELD_OUT, LABELLED

#: Every labelled message, for properties that need realistic replies.
LABELLED_TEXTS = [text for text, _ in LABELLED + HELD_OUT]

#: Replies to check properties on: arbitrary text, labelled messages, and two
#: labelled messages in one (which match rules of several intents, so the
#: conflict penalty applies).
MESSAGES = st.one_of(
    st.text(),
    st.sampled_from(LABELLED_TEXTS),
    st.tuples(st.sampled_from(LABELLED_TEXTS), st.sampled_from(LABELLED_TEXTS)).map(" ".join),
)

#: What :func:`normalize` may output: lower-case ASCII words, one space apart.
NORMALIZED = re.compile(r"(?:[a-z0-9]+(?: [a-z0-9]+)*)?")


def _strip_accents(text: str) -> str:
    return "".join(char for char in unicodedata.normalize("NFKD", text) if not unicodedata.combining(char))


#: Ways customers type the same message: its case, accents, surrounding space.
SURFACE_VARIATIONS = {
    "upper": str.upper, "lower": str.lower, "title": str.title, "swapcase": str.swapcase,
    "no accents": _strip_accents, "padded": lambda text: f"  {text}\n\t",
}

#: Thresholds the product needs: a wrong opt-out loses a customer, a missed
#: one breaks the law and WhatsApp policy.
MIN_ACCURACY = 0.95
MIN_OPT_OUT_PRECISION = 1.0
MIN_OPT_OUT_RECALL = 0.97
#: Size the labelled set must keep.
MIN_MESSAGES = 220
MIN_PER_INTENT = 40


@dataclasses.dataclass
class Report:
    """Accuracy of :func:`classify` over a labelled set."""

    accuracy: float
    precision: dict[str, float]
    recall: dict[str, float]
    confusion: Counter[tuple[str, str]]
    errors: list[tuple[str, str, Classification]]


def evaluate(pairs: list[tuple[str, str]]) -> Report:
    """Classify every text and compare with its label.

    Parameters:
      pairs: ``(text, expected intent)`` tuples.
    """
    confusion: Counter[tuple[str, str]] = Counter()
    errors = []
    for text, expected in pairs:
        result = classify(text)
        confusion[expected, result.intent] += 1
        if result.intent != expected:
            errors.append((text, expected, result))

    precision, recall = {}, {}
    for intent in INTENTS:
        true_positives = confusion[intent, intent]
        predicted = sum(confusion[other, intent] for other in INTENTS)
        actual = sum(confusion[intent, other] for other in INTENTS)
        # An intent never predicted made no wrong prediction.
        precision[intent] = true_positives / predicted if predicted else 1.0
        recall[intent] = true_positives / actual if actual else 1.0
    accuracy = sum(confusion[intent, intent] for intent in INTENTS) / len(pairs)
    return Report(accuracy=accuracy, precision=precision, recall=recall, confusion=confusion, errors=errors)


def print_report(title: str, report: Report, *, total: int) -> None:
    """Print per-intent precision and recall, accuracy and the confusion matrix.

    Parameters:
      title: the first line.
      report: what :func:`evaluate` returned.
      total: the number of messages evaluated.
    """
    width = max(len(intent) for intent in INTENTS) + 2
    print(f"\n{title}: {total} messages, accuracy {report.accuracy:.3f}")
    print(f"{'intent':<{width}}{'precision':>10}{'recall':>8}{'support':>9}")
    for intent in INTENTS:
        support = sum(report.confusion[intent, other] for other in INTENTS)
        print(f"{intent:<{width}}{report.precision[intent]:>10.3f}{report.recall[intent]:>8.3f}{support:>9}")
    print("confusion matrix (rows: expected, columns: predicted)")
    print(" " * width + "".join(f"{intent:>{width}}" for intent in INTENTS))
    for expected in INTENTS:
        cells = "".join(f"{report.confusion[expected, predicted]:>{width}}" for predicted in INTENTS)
        print(f"{expected:<{width}}{cells}")
    for text, expected, result in report.errors:
        print(f"  MISS {text!r}: expected {expected}, got {result.intent} ({result.matched})")


@pytest.mark.parametrize(
    "title, pairs",
    [("Labelled set", LABELLED), ("Held-out set (now regression data)", HELD_OUT)],
    ids=["labelled", "held_out"],
)
def test_accuracy(title, pairs):
    report = evaluate(pairs)
    print_report(title, report, total=len(pairs))

    assert report.accuracy >= MIN_ACCURACY
    assert report.precision[OPT_OUT] >= MIN_OPT_OUT_PRECISION
    assert report.recall[OPT_OUT] >= MIN_OPT_OUT_RECALL


def test_labelled_set_is_large_and_balanced():
    counts = Counter(intent for _, intent in LABELLED)

    assert len(LABELLED) >= MIN_MESSAGES
    assert set(counts) == set(INTENTS)
    assert min(counts.values()) >= MIN_PER_INTENT
    texts = [text for text, _ in LABELLED + HELD_OUT]
    assert len(texts) == len(set(texts)), "a message appears twice"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Já PAGUEI!!!", "ja paguei"),
        ("Siiiim", "sim"),
        ("paaaguei", "paguei"),
        ("NÃO", "nao"),
        ("ñ", "n"),
        ("ação", "acao"),
        ("2ª via", "2a via"),
        ("pix 👍✅ ok", "pix ok"),
        ("  muito   \n\t espaço  ", "muito espaco"),
        ("R$ 1.500,00", "r 1 500 00"),
        ("kkkkkk", "k"),
        # Portuguese doubles r and s: kept inside a word, collapsed at its start.
        ("isso", "isso"),
        ("carrrro", "carro"),
        ("sssair", "sair"),
        ("pa$$ar", "pa ar"),
        # Digits are amounts and dates, never stretched letters.
        ("100", "100"),
        ("2024", "2024"),
        ("comprovante.pdf", "comprovante pdf"),
        ("", ""),
        ("🙏🙏", ""),
    ],
)
def test_normalize(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "\n\t ", None])
def test_empty_text_is_other(text):
    result = classify(text)

    assert result.intent == OTHER
    assert result.confidence == 1.0


@pytest.mark.parametrize("text", ["?", "👍", "😂😂", "...", "[áudio]", "[figurinha]"])
def test_symbols_emoji_and_audio_are_other(text):
    assert classify(text).intent == OTHER


@pytest.mark.parametrize(
    "text",
    ["SAIR", "sair", "Sair.", " sair!!! ", "PARAR", "parar", "STOP", "stop", "Stop!", "pare", "PARA", "CANCELAR",
     "cancelar.", "descadastrar", "unsubscribe", "sair sair", "STOP por favor", "SAAAIR", "🛑 PARAR 🛑"],
)
def test_single_opt_out_keyword_is_opt_out(text):
    result = classify(text)

    assert result.intent == OPT_OUT
    assert result.confidence >= 0.95
    assert result.matched.startswith("command:")


@pytest.mark.parametrize(
    "text, expected",
    [
        # "sair"/"parar" inside ordinary sentences are not stop requests.
        ("vou sair do trabalho e pago", NEGOTIATE),
        ("vou sair do trabalho agora, depois falo com vc", OTHER),
        ("vou parar no posto e te ligo", OTHER),
        ("parcelar", NEGOTIATE),
        ("dá pra parcelar?", NEGOTIATE),
        ("da pra remover a multa?", NEGOTIATE),
        ("meu cartão foi bloqueado", OTHER),
        ("bloqueei o cartão", OTHER),
        ("o boleto caiu na caixa de spam", QUESTION),
        ("denunciei o golpe no banco", OTHER),
        ("quero cancelar o contrato", OTHER),
        ("quero cancelar essa cobrança, não devo isso", QUESTION),
        ("nao quero receber o boleto por email, manda aqui", QUESTION),
        ("não quero sair da lista", OTHER),
        # A payment claim with a request to stop *charging* is a payment claim.
        ("pode parar de cobrar que já paguei", PAID),
        ("já paguei, pode parar de mandar", PAID),
        ("Ja paguei! Nao precisa mandar mais", PAID),
        ("quero fazer um acordo pra parar essas cobranças", NEGOTIATE),
        ("pode parar de cobrar, vou pagar sexta", NEGOTIATE),
        # ... but an explicit request to stop messages wins over it.
        ("já paguei, não quero mais receber mensagem de vocês", OPT_OUT),
        ("ja paguei, para de me mandar mensagem", OPT_OUT),
        ("Não me mande mais mensagens, já quitei", OPT_OUT),
        # Alone, "stop charging me" is honoured as an opt-out.
        ("parem de me cobrar!!!", OPT_OUT),
        ("como faço pra sair dessa lista?", OPT_OUT),
        # Negated claims do not count.
        ("ainda não paguei, pago sexta", NEGOTIATE),
        ("Ainda não paguei, qual é o valor mesmo?", QUESTION),
        ("não, já paguei", PAID),
        ("não quero parcelar, quero pagar à vista, qual o valor?", QUESTION),
        ("não, não quero mais receber", OPT_OUT),
        # "pago" is a claim; "pago amanhã" is a promise.
        ("pago", PAID),
        ("Pago ✅", PAID),
        ("pago amanhã", NEGOTIATE),
        ("pago para voces amanha", NEGOTIATE),
        ("eu pago mais tarde quando sair do serviço", NEGOTIATE),
        # A promise to pay today with a request for the key needs the key.
        ("vou pagar hoje, me manda a chave pix", QUESTION),
        ("fiz o pix", PAID),
        ("qual a chave pix?", QUESTION),
        ("pra qual conta eu transfiro?", QUESTION),
        ("transferi", PAID),
        # Disputes are questions.
        ("não reconheço essa cobrança", QUESTION),
        ("que conta é essa?", QUESTION),
        ("quem é?", OTHER),
        # Abbreviations.
        ("ja pg vlw", PAID),
        ("pgto feito", PAID),
        ("ñ tenho como pagar td agr", NEGOTIATE),
        ("naum me manda mais msg", OPT_OUT),
        ("manda o piks", QUESTION),
        ("bolet pfv", QUESTION),
        ("Paguei metade agora e o resto pago dia 20", PAID),
        ("o boleto vence dia 10?", QUESTION),
    ],
)
def test_tricky_cases(text, expected):
    result = classify(text)

    assert result.intent == expected, result


@pytest.mark.parametrize(
    "text",
    ["[imagem]", "[Imagem]", "<Mídia oculta>", "[foto]", "IMG-20240312-WA0007.jpg", "Scan 2024-03-12.PNG",
     "documento", "arquivo.pdf"],
)
def test_bare_image_or_document_is_a_receipt_with_lower_confidence(text):
    result = classify(text)

    assert result.intent == PAID
    assert result.confidence < classify("já paguei").confidence


def test_a_file_named_receipt_is_a_claim():
    result = classify("comprovante.pdf")

    assert result.intent == PAID
    assert result.matched == "receipt: comprovante"


@pytest.mark.parametrize("text", ["[vídeo]", "[áudio]", "manda em pdf", "foto do boleto por favor"])
def test_other_media_and_format_requests_are_not_receipts(text):
    assert classify(text).intent != PAID


def test_mixed_message_lowers_confidence_and_names_the_rule():
    plain = classify("já paguei")
    mixed = classify("já paguei, qual o valor da próxima parcela?")

    assert plain.intent == mixed.intent == PAID
    assert mixed.confidence < plain.confidence
    assert plain.matched == "paid_verb: paguei"


@given(MESSAGES)
def test_any_message_gets_a_well_formed_classification(text):
    result = classify(text)

    assert result.intent in INTENTS
    assert 0.0 <= result.confidence <= 1.0
    if not text.strip():
        assert (result.intent, result.matched) == (OTHER, "empty")
    else:
        # Every decision other than "no rule matched" names its rule for the logs.
        assert bool(result.matched) == (result.intent != OTHER), result
    assert classify(text) == result  # no state carried from one message to the next


@pytest.mark.parametrize("variation", sorted(SURFACE_VARIATIONS))
def test_case_accents_and_surrounding_space_do_not_change_the_intent(variation):
    vary = SURFACE_VARIATIONS[variation]
    changed = [(text, classify(text).intent, classify(vary(text)).intent) for text in LABELLED_TEXTS
               if classify(vary(text)).intent != classify(text).intent]

    assert changed == []


@given(st.text())
def test_normalize_gives_lower_case_ascii_words_and_is_idempotent(text):
    normalized = normalize(text)

    assert NORMALIZED.fullmatch(normalized), normalized
    assert normalize(normalized) == normalized
    assert normalize(text.upper()) == normalize(text.lower()) or not text.isascii()


def test_classification_is_frozen():
    result = classify("sair")

    with pytest.raises(dataclasses.FrozenInstanceError):
        result.intent = PAID  # type: ignore[misc]


@pytest.mark.parametrize(
    "text",
    ["VOLTAR", "voltar", "Voltar!", "START", "ativar", "REATIVAR", "quero receber de novo", "Quero receber novamente",
     "aceito receber", "aceito receber as mensagens", "quero voltar a receber", "podem voltar a mandar",
     "pode ativar as mensagens", "quero receber as mensagens de novo"],
)
def test_opt_back_in(text):
    assert is_opt_back_in(text)


@pytest.mark.parametrize(
    "text",
    ["", "   ", "sair", "não quero receber de novo", "nao aceito receber", "vou voltar mais tarde", "ok",
     "quero receber o boleto", "aceito", "voltar amanhã"],
)
def test_not_opt_back_in(text):
    assert not is_opt_back_in(text)
