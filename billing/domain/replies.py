"""Classifying a customer's WhatsApp reply to a billing reminder.

Customers answer "sua fatura venceu" messages in Brazilian WhatsApp style:
no accents, all caps, stretched letters ("siiim"), abbreviations ("vc", "pgto",
"ñ"), emoji, and media placeholders. :func:`classify` puts a reply in one of
:data:`INTENTS` with keyword rules over the :func:`normalize`-d text; there is
no model, so every decision can be traced to the rule named in
:attr:`Classification.matched`.

Priority, highest first, when a message matches rules of several intents:

1. **Opt-out command**: the whole message is a stop word ("SAIR", "PARAR",
   "STOP", "CANCELAR", ...), in any case and punctuation.
2. **Explicit opt-out**: a request to stop receiving messages ("não quero mais
   receber", "me tira da lista", "para de me mandar mensagem", "descadastrar",
   "vou denunciar", "bloquear"). It wins even over a payment claim ("já
   paguei, não quero mais receber mensagem de vocês"): honouring a stop request
   is a legal and WhatsApp-policy duty, and the payment claim is still visible
   to a human in the conversation.
3. **Paid**: a claim that the bill was paid ("já paguei", "fiz o pix",
   "segue o comprovante"), or a message that is only an image/document
   placeholder ("[imagem]", "comprovante.pdf", "<Mídia oculta>"): customers
   answer a reminder with a photo of the receipt far more often than with
   anything else, so it is paid with a lower confidence. Audio and stickers
   are not receipts and stay ``other``. A payment claim outranks negotiation
   and questions because it is the claim that must be checked before the
   next reminder goes out.
4. **Negotiate**: instalments, discount, deal, more time, a later date, not
   being able to pay now.
5. **Question**: how/where/how much to pay; asking for the boleto, the pix
   key, the link; disputing the charge ("não reconheço essa cobrança", "que
   conta é essa?"). A dispute is a question because what it needs is an
   answer about the charge, not a payment plan, and it is not a request to
   stop messages.
6. **Promise to pay**, without a later date ("vou sair do trabalho e pago",
   "eu pago mais tarde"): negotiate, but below questions, because in "vou
   pagar hoje, me manda a chave pix" what the customer needs now is the key.
7. **Stop charging me** ("pode parar de cobrar", "para de me cobrar", "não
   precisa mandar mais"): opt-out, but only when nothing above matched. The
   request is about the debt rather than the channel, so when the message
   gives a reason to act on (a payment, a negotiation, a dispute, a promise)
   that reason is the intent: "pode parar de cobrar que já paguei" is paid,
   and reminders for that bill stop through the paid flow without losing the
   customer. Alone, it is honoured as an opt-out.
8. **Other**: anything else (greetings, "ok", "quem é?", emoji only).

A claim or request after a negation ("ainda não paguei", "não quero
parcelar", "não quero sair da lista") does not count.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

PAID = "paid"
NEGOTIATE = "negotiate"
QUESTION = "question"
OPT_OUT = "opt_out"
OTHER = "other"
#: Every intent :func:`classify` returns.
INTENTS = (PAID, NEGOTIATE, QUESTION, OPT_OUT, OTHER)

#: Confidence of a message that is only an opt-out word ("SAIR").
CONFIDENCE_COMMAND = 0.99
#: Confidence of an explicit stop request inside a longer message.
CONFIDENCE_EXPLICIT_OPT_OUT = 0.95
#: Confidence of a payment claim in words.
CONFIDENCE_PAID = 0.9
#: Confidence of a bare image or document, taken to be a receipt.
CONFIDENCE_PLACEHOLDER = 0.6
#: Confidence of a negotiation request (instalments, discount, later date).
CONFIDENCE_NEGOTIATE = 0.85
#: Confidence of a question about paying or about the charge.
CONFIDENCE_QUESTION = 0.8
#: Confidence of a promise to pay with no later date.
CONFIDENCE_PROMISE = 0.65
#: Confidence of a bare "stop charging me", read as an opt-out.
CONFIDENCE_STOP_CHARGING = 0.7
#: Confidence of ``other`` when no rule matched a non-empty message.
CONFIDENCE_NO_MATCH = 0.5
#: Confidence of ``other`` for an empty or whitespace-only message.
CONFIDENCE_EMPTY = 1.0
#: Subtracted from the winner's confidence for each other intent that also
#: matched: a message that mixes topics is less certain.
CONFLICT_PENALTY = 0.05
#: Floor of the confidence after conflict penalties.
MIN_CONFIDENCE = 0.3

#: Whole-word abbreviations and misspellings, replaced before the rules run so
#: that each rule names one spelling. Applied by :func:`classify`, not by
#: :func:`normalize`, which only does the character-level clean-up.
ABBREVIATIONS: dict[str, str] = {
    "n": "nao",
    "naum": "nao",
    "nau": "nao",
    "vc": "voce",
    "vce": "voce",
    "vcs": "voces",
    "q": "que",
    "pq": "porque",
    "tb": "tambem",
    "tbm": "tambem",
    "td": "tudo",
    "tds": "todos",
    "blz": "beleza",
    "vlw": "valeu",
    "obg": "obrigado",
    "obgd": "obrigado",
    "obrigada": "obrigado",
    "pgto": "pagamento",
    "pagto": "pagamento",
    "pgt": "pagamento",
    "pg": "pago",
    "bolet": "boleto",
    "blt": "boleto",
    "piks": "pix",
    "hj": "hoje",
    "agr": "agora",
    "amnh": "amanha",
    "dps": "depois",
    "msg": "mensagem",
    "msgs": "mensagens",
    "pfv": "por favor",
    "pfvr": "por favor",
    "pf": "por favor",
    "pls": "por favor",
    "qnd": "quando",
    "qdo": "quando",
    "vo": "vou",
    "eh": "e",
}

# Letters that Portuguese legitimately doubles ("carro", "isso"): a run of
# them is shortened to two, not one, except at the start of a word.
_DOUBLING_LETTERS = "rs"
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_REPEATED_LETTER = re.compile(r"([a-z])\1+")
_WORD_INITIAL_DOUBLE = re.compile(r"\b([rs])\1+")

# A negation just before a match cancels it: "ainda nao paguei", "nao foi
# pago", "nao quero parcelar", "nao quero sair da lista". Only the last one or
# two words count, so "nao, ja paguei" (normalized "nao ja paguei") is a claim.
_NEGATION_BEFORE = re.compile(
    r"(?:^|\s)(?:nao|nem|nunca)"
    r"(?: (?:foi|esta|ta|estava|ficou|tinha|tenho|consegui|ainda|eu|quero|preciso|vou|e pra|era pra))?(?: mais)?\s*$"
)

# A media placeholder as the client exports it, checked on the raw text
# because normalizing turns "comprovante.pdf" into ordinary words.
_ATTACHMENT_FILE = re.compile(r"^[\w\-. ()]+\.(?:pdf|jpe?g|png|heic|webp|gif)$", re.IGNORECASE)


def normalize(text: str) -> str:
    """Reduce a message to lower-case ASCII words for keyword matching.

    Accents are stripped (NFKD, combining marks dropped: "não" -> "nao",
    "2ª" -> "2a"); anything that is not a letter or digit, emoji and
    punctuation included, becomes a space; stretched letters are collapsed
    ("siiim" -> "sim", "paaaguei" -> "paguei"), but "rr" and "ss" inside a
    word are kept because Portuguese spells with them ("carro", "isso");
    whitespace is collapsed and trimmed. Digits are never collapsed ("100").

    Parameters:
      text: the message as received.

    Returns:
      The normalized text; empty if the message had no letters or digits.
    """
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(char for char in decomposed if not unicodedata.combining(char))
    words = _NON_ALNUM.sub(" ", stripped.lower())

    def collapse(match: re.Match[str]) -> str:
        letter = match.group(1)
        return letter * 2 if letter in _DOUBLING_LETTERS else letter

    words = _REPEATED_LETTER.sub(collapse, words)
    # No Portuguese word starts with "rr" or "ss": "sssair" is "sair".
    words = _WORD_INITIAL_DOUBLE.sub(r"\1", words)
    return " ".join(words.split())


def _canonical(text: str) -> str:
    """Normalize and expand :data:`ABBREVIATIONS`."""
    return " ".join(ABBREVIATIONS.get(word, word) for word in normalize(text).split())


@dataclass(frozen=True)
class Classification:
    """The intent of one reply.

    Attributes:
      intent: one of :data:`INTENTS`.
      confidence: a heuristic score from 0 to 1: the deciding rule's
        confidence, lowered by :data:`CONFLICT_PENALTY` for each other intent
        that also matched.
      matched: ``"<rule>: <matched text>"`` of the deciding rule, for logs;
        ``"empty"`` for empty text, ``""`` when no rule matched.
    """

    intent: str
    confidence: float
    matched: str = ""


@dataclass(frozen=True)
class _Rule:
    """One keyword rule.

    Parameters:
      name: shown in :attr:`Classification.matched`.
      intent: the intent it votes for.
      confidence: its :attr:`Classification.confidence` when it decides.
      pattern: searched in the canonical text (or the raw, stripped text when
        ``on_raw``); a group named ``hit`` marks the part to report and to
        check for a preceding negation.
      negatable: whether a negation just before the match cancels it.
      on_raw: whether to match the raw text instead of the canonical one.
    """

    name: str
    intent: str
    confidence: float
    pattern: re.Pattern[str]
    negatable: bool = True
    on_raw: bool = False

    def find(self, *, canonical: str, raw: str) -> str | None:
        """Return the matched text, or None if the rule does not apply.

        Parameters:
          canonical: the normalized, abbreviation-expanded message.
          raw: the message as received, stripped.
        """
        subject = raw if self.on_raw else canonical
        for match in self.pattern.finditer(subject):
            group = "hit" if "hit" in self.pattern.groupindex else 0
            hit, start = match.group(group), match.start(group)
            # A rule that itself starts with a negation ("nao quero mais
            # receber") must not be cancelled by an earlier "nao, ...".
            if self.negatable and not hit.startswith("nao ") and _NEGATION_BEFORE.search(subject[:start]):
                continue
            return hit
        return None


def _rules(intent: str, *, confidence: float, negatable: bool = True, **patterns: str) -> tuple[_Rule, ...]:
    """Compile named patterns into rules of one intent.

    Parameters:
      intent: the intent the rules vote for.
      confidence: their confidence when they decide.
      negatable: whether a negation just before a match cancels it.
      patterns: rule name -> regular expression over the canonical text.
    """
    return tuple(
        _Rule(name=name, intent=intent, confidence=confidence, pattern=re.compile(pattern), negatable=negatable)
        for name, pattern in patterns.items()
    )


_STOP_WORDS = (
    r"sair|saia|parar|pare|para|parem|stop|cancelar|cancela|cancele|remover|remova|excluir|descadastrar|"
    r"desinscrever|unsubscribe|bloquear|desativar|chega|basta"
)
_POLITE = r"por favor|obrigado|ok|ja|agora"
# Objects of "receber"/"mandar" that are a request for payment details, not a
# stop request: "nao quero receber o boleto por email".
_PAYMENT_OBJECT = r"(?:o |a |os |as )?(?:boleto|link|pix|codigo|comprovante|segunda|fatura|recibo)"
# "cancelar essa cobranca" disputes the charge; it is not about messages, so
# "cobranca" is not listed.
_MESSAGES = r"(?:mensage\w*|notifica\w*|lembrete\w*|spam|ligac\w*|disparo\w*)"
_DEMONSTRATIVE = r"(?:as |os |a |o |essas |esses |essa |esse |estas |estes |esta |este )?"
_LIST = r"(?:lista\w*|grupo\w*|cadastro|base|envio\w*|disparo\w*|contatos|mailing|transmissao)"
_FROM = r"(?:da|do|das|dos|dessa|desse|dessas|desses|desta|deste|nessa|nesse)"
_REMOVE_VERBS = (
    r"esquece|esqueca|esquecam|tira|tire|tirem|tirar|retira|retire|retirem|retirar|remove|remova|removam|remover|"
    r"exclua|excluam|exclui|excluir|apaga|apague|apaguem|apagar|deleta|delete|deletar|descadastr\w*"
)
_WEEKDAYS = r"segunda(?! via)|terca|quarta|quinta|sexta|sabado|domingo"
_LATER_DATE = (
    rf"(?:semana|mes) que vem|proxim[oa] (?:semana|mes|{_WEEKDAYS})|(?:fim|final|comeco|inicio) do mes|"
    rf"(?:depois|antes) do dia|dia \d{{1,2}}|amanha|{_WEEKDAYS}|nesse dia"
)
# Words that make a date a payment date: "consigo pagar dia 10", "da pra
# esperar ate o dia 10", "mes que vem eu quito"; without them "o boleto vence
# dia 10?" is a question, not a negotiation.
_PAYMENT_CONTEXT = (
    r"pag\w*|quit(?:o|ar)|acert(?:o|ar)|esperar|aguard\w*|ate|pode ser|consigo|posso|recebo|prazo|sem falta"
)
# Words after "pago" that make it a promise ("pago amanha", "pago no pix")
# or a question ("pago como?") rather than "it is paid".
_NOT_PAID_AFTER_PAGO = (
    rf"amanha|hoje|agora|depois|mais|semana|mes|{_WEEKDAYS}|dia|ate|quando|assim|logo|"
    r"no|na|em|a|o|com|como|onde|pelo|pela|por|para|pra|pro|so|sem|ja ja"
)

# The rules of each priority level, highest first (see the module docstring).
_OPT_OUT_COMMAND = _rules(
    OPT_OUT,
    confidence=CONFIDENCE_COMMAND,
    command=rf"^(?:(?:{_POLITE}) )*(?P<hit>{_STOP_WORDS})(?: (?:{_STOP_WORDS}|{_POLITE}))*$",
)
_OPT_OUT_EXPLICIT = _rules(
    OPT_OUT,
    confidence=CONFIDENCE_EXPLICIT_OPT_OUT,
    stop_word=r"\b(?:stop|unsubscribe|descadastr\w*|desinscrev\w*)\b",
    # A threat to report this number; "denunciei o golpe no banco" (past, about
    # something else) is not one.
    report=r"\b(?:vou |vamos |irei |a gente vai )?(?:te |voces )?denunci(?:ar|o|ando)\b",
    # "isso e spam", "marcar como spam"; not "caiu na caixa de spam".
    spam=r"\b(?:e|isso e|como) spam\b",
    # Blocking *us*; "bloqueei o cartao" or "vou bloquear o cartao" is not.
    block=(
        r"\b(?:te|voces|voce) bloque(?:ar|arei|io|ando)?\b"
        r"|\bbloque(?:ar|arei|i|ando) (?:esse |este |o |seu |teu |o seu )?"
        r"(?:numero|contato|voces|voce|whats\w*|zap|empresa)\b"
        r"|\b(?:vou|vamos|irei) bloquear\b(?! (?:o |meu |a |minha )?(?:cartao|conta|chip|celular|app|aplicativo))"
    ),
    cancel_messages=(
        r"\bcancela\w* (?:a |minha |essa )?inscricao\b"
        rf"|\b(?:cancela|desativ)\w* {_DEMONSTRATIVE}(?:recebimento|envio\w*|{_MESSAGES})"
    ),
    do_not_want=(
        r"\bnao (?:quero|desejo|aceito|autorizo|gostaria de)(?: mais)? "
        r"(?:receber|ser (?:mais )?(?:contatad|contactad|incomodad|perturbad)\w*|o envio|envio|contato"
        r"|(?:essas |estas |as |suas |tuas )?(?:mensage\w*|notifica\w*|lembrete\w*)"
        r"|que (?:voces |voce )?(?:me )?(?:mandem|enviem|liguem|mande|envie))\b"
        rf"(?! {_PAYMENT_OBJECT}| por (?:e ?mail|carta|correio))"
    ),
    do_not_send=(
        r"\bnao (?:me )?(?:mande|mandem|manda|mandar|envie|enviem|envia|enviar|liguem|ligue) "
        r"(?:mais|nada|(?:essas |estas )?(?:mensage\w*|notifica\w*))\b"
        rf"(?! {_PAYMENT_OBJECT})"
    ),
    # "pode parar de mandar" is permission, not a command: it is a weaker
    # request, below (stop_charging).
    stop_sending=(
        r"(?<!pode )(?<!podem )\b(?:para|pare|parem|parar)\b "
        r"(?:de (?:me |nos |ficar |ficarem )*(?:mandar|enviar|mandando|enviando|encher|perturbar|perturbando|"
        r"incomodar|incomodando|importunar|ligar|ligando)\b"
        rf"|com {_DEMONSTRATIVE}(?:mensage\w*|notifica\w*|lembrete\w*|spam|ligac\w*))"
    ),
    remove_number=(
        rf"\b(?:me )?(?:{_REMOVE_VERBS})\b (?:o |a )?(?:meu |minha |esse |este |seu )?"
        r"(?:numero|contato|telefone|celular|whats\w*|nome|cadastro)\b"
    ),
    remove_me=rf"\bme (?:{_REMOVE_VERBS})\b (?:{_FROM}|daqui|dai|dali|de)\b",
    leave_list=rf"\b(?:sair|saia|sai|remov\w*|tir\w*|retir\w*|exclu\w*) {_FROM} (?:\w+ )?{_LIST}\b",
    want_out=(
        r"\bquero sair$|^nao quero mais(?: nada| isso)?$|\bsai fora\b"
        r"|\bquero ser (?:excluid|removid|retirad|descadastrad|tirad)\w*"
    ),
    if_you_keep_sending=(
        r"\bse (?:voces |voce )?(?:continuar(?:em)? (?:me )?(?:mandando|enviando|ligando)"
        r"|(?:me )?(?:mandarem|enviarem|mandar|enviar) mais)\b"
    ),
    enough=r"\bchega de (?:me )?(?:mensage\w*|notifica\w*|lembrete\w*|spam|mandar|enviar|encher|perturbar)\b",
    fed_up=r"\bnao aguento mais (?:essas? |estas? |tantas? |receber )?(?:mensage\w*|notifica\w*|lembrete\w*|spam)\b",
    leave_me_alone=(
        r"\bme deix\w* em paz\b|\bnao me (?:perturbe|perturbem|incomode|incomodem|importune|importunem)\b"
        r"|\bnao me (?:procure|procurem|contate|contatem|chame|chamem) mais\b|\b(?:para|pare|parem) com isso\b"
        r"|\bnao (?:entre|entrem|entra) (?:mais )?em contato\b|\bme esquec(?:e|a|am)\b"
    ),
)
_PAID_CLAIMS = _rules(
    PAID,
    confidence=CONFIDENCE_PAID,
    # paguei, plus the typos "pguei", "pagei".
    paid_verb=r"\b(?:pa?gu?ei|transferi|depositei|quitei|efetuei|quitamos|pagamos)\b",
    made_payment=(
        r"\b(?:fiz|fizemos|realizei|efetuei|mandei|enviei|(?:foi )?feit[oa]|foi realizad[oa]|foi efetuad[oa])"
        r"(?: o| a| um| uma)? (?:pagamento|pix|transferencia|deposito|ted|doc|quitacao)\b"
    ),
    is_paid=r"\b(?:ja|foi|foram|ta|esta|estao|fica|ficou|tudo|sido)(?: tudo)? (?:pag[oa]s?|quitad[oa]s?)\b",
    bare_pago=rf"^(?:sim |pronto )?(?P<hit>pago|quitad[oa]|efetuad[oa])\b(?! (?:{_NOT_PAID_AFTER_PAGO})\b)",
    payment_done=(
        r"\b(?:pix|pagamento|transferencia|deposito|ted|doc|boleto|fatura|conta|debito) (?:ja )?(?:foi |esta |ta )?"
        r"(?:feit[oa]|efetuad[oa]|realizad[oa]|enviad[oa]|pag[oa]|quitad[oa]|concluid[oa]|confirmad[oa])\b"
    ),
    managed_to_pay=r"\b(?:consegui|acabei de) pagar\b",
    receipt=r"\bcomprovante\w*|\bem anexo\b|\bsegue anexo\b",
    arrived=(
        r"\bcaiu (?:o |a |ai )?(?:pix|pagamento|transferencia|deposito|dinheiro)\b"
        r"|\b(?:pix|pagamento|transferencia|deposito) (?:ja )?caiu\b"
    ),
)
# A bare image or document is a receipt only by likelihood, so it decides with
# a lower confidence than a claim in words. Audio, video and stickers are not
# listed: nobody sends a receipt as a voice note.
_PAID_PLACEHOLDERS = (
    *_rules(
        PAID,
        confidence=CONFIDENCE_PLACEHOLDER,
        placeholder=(
            r"^(?:imagem|image|foto|photo|documento|document|arquivo|anexo|pdf|midia oculta|media omitted|"
            r"imagem (?:anexada|ocultada|omitida)|documento (?:anexado|omitido)|image omitted|document omitted)$"
        ),
    ),
    _Rule(
        name="attachment_file",
        intent=PAID,
        confidence=CONFIDENCE_PLACEHOLDER,
        pattern=_ATTACHMENT_FILE,
        negatable=False,
        on_raw=True,
    ),
)
_NEGOTIATE_REQUESTS = _rules(
    NEGOTIATE,
    confidence=CONFIDENCE_NEGOTIATE,
    instalments=r"\bparcel\w*|\bem \d+ ?(?:x|vezes|parcelas)\b|\b\d+ ?x\b|\bdivid(?:ir|e|o|ido)\b",
    deal=r"\bdesconto\w*|\bacordo\b|\b(?:re)?negoci\w*",
    more_time=(
        r"\bprorrog\w*|\badia(?:r|mento)?\b|\bmais (?:uns |alguns )?(?:prazo|tempo|dias|semanas?)\b"
        r"|\bpreciso de (?:um )?(?:prazo|tempo)\b"
        r"|\b(?:pode|podem|tem como|da pra|consegue) (?:me )?(?:esperar|aguardar)\b"
        r"|\b(?:vou|vai|vamos) atrasar\b|\batrasar um pouco\b|\bpagar (?:depois|outro dia|na proxima)\b"
    ),
    part=(
        r"\b(?:metade|restante|o resto)\b"
        r"|\b(?:consigo|posso|da pra|da para) pagar (?:\d+|so|apenas|um pouco|uma parte|parte)\b"
    ),
    hardship=(
        r"\bsem (?:dinheiro|grana|condic\w*|trabalho|emprego|trabalhar|renda|salario)\b|\bdesempregad[oa]\b"
        r"|\bperdi (?:o |meu )?emprego\b|\bapertad[oa]\b|\bdificuldade\w*"
        r"|\bsituacao (?:ta |esta )?(?:complicada|dificil|feia)\b|\bcondic\w* (?:especial|especiais|melhor|melhores)\b"
    ),
    cannot_pay=(
        r"\bnao (?:tenho|tem|temos|to com|estou com) (?:o |a )?(?:como (?:pagar|quitar)|condic\w*|dinheiro|grana)\b"
        r"|\bnao (?:consigo|consegui|vou conseguir|da pra|posso|vai dar pra|vou poder) (?:pagar|quitar)\b"
    ),
    lower_amount=(
        r"\b(?:tirar|tira|tirem|remover|retirar|abaixar|baixar|diminuir|reduzir|abater) "
        r"(?:os |a |o |as |esse |essa )?(?:juros|multa|valor|taxa)\b"
    ),
    when_paid=(
        r"\bquando (?:eu )?(?:receber|recebo|cair|entrar)\b"
        r"|\bassim que (?:eu )?(?:receber|entrar|cair|puder|der)\b"
    ),
    later_date=rf"^(?=.*\b(?:{_PAYMENT_CONTEXT})\b).*?\b(?P<hit>{_LATER_DATE})\b",
    # A reply that is only a date answers "when will you pay?": "semana que
    # vem sem falta", "dia 10".
    only_date=(
        rf"^(?:(?:so|somente|apenas|ate|na|no|a|o|entao|eu) )*(?P<hit>{_LATER_DATE})"
        r"(?: (?:sem falta|pode ser|ok|ta|beleza|por favor|entao))*$"
    ),
)
_QUESTIONS = _rules(
    QUESTION,
    confidence=CONFIDENCE_QUESTION,
    negatable=False,
    payment_means=(
        r"\bpix\b|\bboleto\w*|\b(?:2a|segunda) via\b|\blink\b|\bcodigo\b|\blinha digitavel\b|\bqr ?code\b"
        r"|\bchave\b|\bdados bancarios\b|\bextrato\b|\bfatura\b"
    ),
    how_where=(
        r"\bcomo (?:que )?(?:eu )?(?:pago|pagar|faco|faz|funciona|posso|consigo)\b"
        r"|\bonde (?:que )?(?:eu )?(?:pago|pagar|posso|fica|faco|consigo)\b|\bforma\w* de pagamento\b"
    ),
    which=(
        r"\b(?:qual|quais|que) (?:e )?(?:o |a |os |as )?"
        r"(?:valor|cobranca|conta|divida|debito|banco|cnpj|cpf|vencimento|multa|juros|mes|data|total|chave|dia)\b"
        r"|\bquanto\b|\bquando vence\b|\bvence quando\b|\bvencimento\b|^(?:e |qual |o )*valor(?: total| atualizado)?$"
        r"|\b(?:manda|mande|mandar|envia|envie|enviar|passa|passe|passar|informa|informe|informar|fala|diz)\b"
        r"(?: \w+){0,3} (?:o |a )?(?:valor|total|vencimento|dados)\b"
    ),
    dispute=(
        r"\bnao reconhec\w*|\bnao (?:devo|comprei|contratei|autorizei)\b|\bnunca (?:comprei|contratei|devi)\b"
        r"|\bdo que se trata\b|\bde onde (?:e|vem|veio)\b|\bnao e (?:minha|meu)\b|\b(?:ta|esta) errad[oa]\b"
        r"|\bindevid[oa]\b|\b(?:esse|este|essa|esta) (?:valor|cobranca|divida|debito|conta)\b"
        r"|\b(?:que|qual|quem|porque|por que)\b.*\bme cobrando\b|\bnao (?:to|estou) entendendo\b"
    ),
    how_to_pay=(
        r"\b(?:aceita\w*|posso pagar|da pra pagar|tem como pagar) (?:com|no|na|em|pelo|pela|por)\b"
        r"|\baceita\w* (?:cartao|dinheiro|credito|debito|transferencia)\b"
        r"|\b(?:manda\w*|envia\w*|passa\w*) (?:por|pelo|no|via) (?:e ?mail|correio|whats\w*|sms)\b"
    ),
)
_PROMISES = _rules(
    NEGOTIATE,
    confidence=CONFIDENCE_PROMISE,
    promise=(
        r"\b(?:vou|vamos|irei|vai) (?:tentar )?(?:pag(?:ar|a)|quitar|acertar)\b|\beu (?:pago|quito|acerto)\b"
        r"|\be (?:ja )?pago\b|\bpago (?:hoje|agora|mais tarde|depois|logo|ja ja|quando|assim)\b"
        r"|\b(?:depois|ja ja|mais tarde|logo mais|hoje) (?:eu )?pago\b|\bpagar mais tarde\b"
    ),
)
_STOP_CHARGING = _rules(
    OPT_OUT,
    confidence=CONFIDENCE_STOP_CHARGING,
    stop_charging=(
        r"\b(?:para|pare|parem|parar)\b (?:de (?:me |ficar )*(?:cobrar|cobrando)\b"
        rf"|com {_DEMONSTRATIVE}cobranc\w*|(?:as |essas |estas |a |essa )cobranc\w*)"
        r"|\bpodem? parar\b"
        r"|\bnao precisa(?:m)? (?:mais )?(?:me )?(?:mandar|enviar|cobrar)\b"
        r"|\bchega de (?:cobranc\w*|me cobrar)\b"
        r"|\bnao quero (?:mais )?ser (?:mais )?cobrad[oa]\b"
    ),
)

#: Rules in priority order: the first that matches decides.
_RULES: tuple[_Rule, ...] = (
    *_OPT_OUT_COMMAND,
    *_OPT_OUT_EXPLICIT,
    *_PAID_CLAIMS,
    *_PAID_PLACEHOLDERS,
    *_NEGOTIATE_REQUESTS,
    *_QUESTIONS,
    *_PROMISES,
    *_STOP_CHARGING,
)


def classify(text: str) -> Classification:
    """Classify a reply to a billing reminder.

    Parameters:
      text: the message as received (any case, accents, emoji).

    Returns:
      The intent of the highest-priority rule that matches (see the module
      docstring for the order and why), or ``other`` when none does, empty
      and whitespace-only text included.
    """
    raw = (text or "").strip()
    canonical = _canonical(raw)
    if not canonical and not raw:
        return Classification(intent=OTHER, confidence=CONFIDENCE_EMPTY, matched="empty")

    winner: tuple[_Rule, str] | None = None
    intents_matched: set[str] = set()
    for rule in _RULES:
        # Once the winner is known, other intents are only counted, so a rule
        # of an intent already seen need not run.
        if rule.intent in intents_matched:
            continue
        hit = rule.find(canonical=canonical, raw=raw)
        if hit is None:
            continue
        intents_matched.add(rule.intent)
        if winner is None:
            winner = (rule, hit)

    if winner is None:
        return Classification(intent=OTHER, confidence=CONFIDENCE_NO_MATCH)
    rule, hit = winner
    penalty = CONFLICT_PENALTY * (len(intents_matched) - 1)
    confidence = round(max(MIN_CONFIDENCE, rule.confidence - penalty), 2)
    return Classification(intent=rule.intent, confidence=confidence, matched=f"{rule.name}: {hit}")


_OPT_BACK_IN = re.compile(
    r"^(?:voltar|start|ativar|reativar|retomar|unstop)$"
    r"|\bquero (?:voltar a )?receber (?:de novo|novamente|outra vez|mais uma vez|"
    r"(?:as |os )?(?:mensage\w*|notifica\w*|lembrete\w*|avisos|cobranc\w*))\b"
    r"|\bquero voltar a receber\b|\bvoltar a receber\b"
    r"|\baceito receber\b"
    r"|\bpodem? voltar a (?:me )?(?:mandar|enviar)\b"
    r"|\b(?:re)?ativar (?:de novo |novamente )?(?:as |os )?(?:mensage\w*|notifica\w*|lembrete\w*|avisos)\b"
)


def is_opt_back_in(text: str) -> bool:
    """Tell whether a message asks to receive messages again after opting out.

    Recognized: "VOLTAR", "START", "ATIVAR"/"REATIVAR" as the whole message,
    and phrases such as "quero receber de novo", "aceito receber", "quero
    voltar a receber", "podem voltar a mandar", "ativar as mensagens".
    A negation just before the phrase ("não aceito receber") cancels it.

    Parameters:
      text: the message as received.

    Returns:
      True if the message is an explicit request to receive messages again.
    """
    canonical = _canonical(text or "")
    for match in _OPT_BACK_IN.finditer(canonical):
        if not _NEGATION_BEFORE.search(canonical[: match.start()]):
            return True
    return False
