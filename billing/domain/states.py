"""The life cycles of a queue and of a contact, and their Portuguese labels.

A contact moves ``pending -> queued -> sending -> sent -> delivered -> read``;
``queued`` means a send slot is booked and a broker message carries it, and
``sending`` means a worker has claimed it. Every other state is final.
"""
from __future__ import annotations


class ContactStatus:
    PENDING = "pending"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    OPTED_OUT = "opted_out"

    #: Not yet done: the queue cannot complete while any contact is in one.
    OPEN = (PENDING, QUEUED, SENDING)
    #: Reached WhatsApp (counts as sent in the queue status).
    DELIVERED_TO_GATEWAY = (SENT, DELIVERED, READ)
    ALL = (PENDING, QUEUED, SENDING, SENT, DELIVERED, READ, FAILED, REJECTED, CANCELLED, OPTED_OUT)

    LABELS = {
        PENDING: "Pendente",
        QUEUED: "Agendado",
        SENDING: "Enviando",
        SENT: "Enviado",
        DELIVERED: "Entregue",
        READ: "Lido",
        FAILED: "Falhou",
        REJECTED: "Rejeitado",
        CANCELLED: "Cancelado",
        OPTED_OUT: "Descadastrado",
    }


class QueueStatus:
    PENDING = "pending"
    PROCESSING = "processing"
    PAUSED = "paused"
    INSTANCE_DOWN = "instance_down"
    COMPLETED = "completed"
    CANCELLED = "cancelled"

    #: States in which dispatch books and sends.
    RUNNING = (PENDING, PROCESSING)
    #: States a queue never leaves.
    FINAL = (COMPLETED, CANCELLED)
    ALL = (PENDING, PROCESSING, PAUSED, INSTANCE_DOWN, COMPLETED, CANCELLED)

    LABELS = {
        PENDING: "Pendente",
        PROCESSING: "Processando",
        PAUSED: "Pausado",
        INSTANCE_DOWN: "Instância offline",
        COMPLETED: "Concluído",
        CANCELLED: "Cancelado",
    }

