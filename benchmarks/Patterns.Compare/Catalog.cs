using Patterns.Compare.Scenarios;

namespace Patterns.Compare;

/// <summary>
/// Every row of the comparison, in report order. Rows of one pattern are compared with that pattern's first row.
/// To add a pattern, a transport or a store, add rows here.
/// </summary>
public static class Catalog
{
    private const string InMemory = "in-process, nothing durable";
    private const string Peer = "two nodes in this process linked over loopback TCP (gRPC streams over HTTP/2, no TLS): the producer on one, the handlers on the other; nothing durable (messages in flight are kept for replay until the peer acknowledges them)";
    private const string Rabbit = "durable queues, persistent messages, publisher confirms (128 in flight), prefetch 256, ack after the handler";

    /// <summary>Gets the rows.</summary>
    public static IReadOnlyList<Row> Rows { get; } =
    [
        new("rr-inmemory", "request-response", "in-memory", Requirement.None,
            $"16 callers, each awaiting its reply; {InMemory}", () => new RequestResponseScenario(TransportKind.InMemory)),
        new("rr-rabbitmq", "request-response", "RabbitMQ", Requirement.RabbitMq,
            "16 callers, each awaiting its reply; request queue durable, persistent requests with confirms; replies on the caller's reply queue",
            () => new RequestResponseScenario(TransportKind.RabbitMq)),
        new("rr-peerlinks", "request-response", "peer links", Requirement.None,
            $"16 callers, each awaiting its reply; {Peer}", () => new RequestResponseScenario(TransportKind.PeerLinks)),
        new("pubsub-inmemory", "pub/sub, 2 subscribers", "in-memory", Requirement.None,
            $"one publisher, two consumer groups (each message handled twice); {InMemory}", () => new PubSubScenario(TransportKind.InMemory)),
        new("pubsub-rabbitmq", "pub/sub, 2 subscribers", "RabbitMQ", Requirement.RabbitMq,
            $"topic exchange, one queue per consumer group; {Rabbit}", () => new PubSubScenario(TransportKind.RabbitMq)),
        new("pubsub-peerlinks", "pub/sub, 2 subscribers", "peer links", Requirement.None,
            $"one publisher, two consumer groups on the other node; {Peer}", () => new PubSubScenario(TransportKind.PeerLinks)),
        new("queue-inmemory", "queue, 4 competing consumers", "in-memory", Requirement.None,
            $"one consumer of concurrency 4, queue capacity 1,024; {InMemory}", () => new QueueScenario(TransportKind.InMemory)),
        new("queue-rabbitmq", "queue, 4 competing consumers", "RabbitMQ", Requirement.RabbitMq,
            $"one consumer of concurrency 4; {Rabbit}", () => new QueueScenario(TransportKind.RabbitMq)),
        new("queue-peerlinks", "queue, 4 competing consumers", "peer links", Requirement.None,
            $"one consumer of concurrency 4 on the other node, queue capacity 1,024; {Peer}", () => new QueueScenario(TransportKind.PeerLinks)),
        new("batch-inprocess", "batches of 100", "in-process batcher", Requirement.None,
            $"Batcher (MaxCount 100, MaxAge 50 ms, capacity 1,024), one producer; {InMemory}", () => new BatcherScenario()),
        new("batch-inmemory", "batches of 100", "in-memory", Requirement.None,
            $"batch consumer of a queue (MaxCount 100, MaxAge 50 ms), settled per batch; {InMemory}", () => new BatchConsumerScenario(TransportKind.InMemory)),
        new("batch-rabbitmq", "batches of 100", "RabbitMQ", Requirement.RabbitMq,
            $"batch consumer of a queue (MaxCount 100, MaxAge 50 ms), acknowledged per batch; {Rabbit}", () => new BatchConsumerScenario(TransportKind.RabbitMq)),
        new("stream-inmemory", "windowed stream", "in-memory", Requirement.None,
            $"subscription → event time (50 ms disorder) → key by region → 100 ms tumbling windows → count and total; {InMemory}",
            () => new WindowedStreamScenario(TransportKind.InMemory)),
        new("stream-rabbitmq", "windowed stream", "RabbitMQ", Requirement.RabbitMq,
            $"the same pipeline over a RabbitMQ subscription; {Rabbit}", () => new WindowedStreamScenario(TransportKind.RabbitMq)),
        new("es-inmemory", "event sourcing + async projection", "in-memory", Requirement.None,
            $"16 writers, one event per append; async document projection (pages of 256, checkpoint per page); {InMemory}",
            () => new EventSourcingScenario(StoreKind.InMemory)),
        new("es-sqlite", "event sourcing + async projection", "SQLite", Requirement.None,
            "the same on a SQLite file: WAL, synchronous=FULL (every commit fsynced), appends group-committed by the single writer",
            () => new EventSourcingScenario(StoreKind.Sqlite)),
        new("es-postgres", "event sourcing + async projection", "PostgreSQL", Requirement.Postgres,
            "the same on PostgreSQL 15: synchronous_commit on (the server default), concurrent appends group-committed",
            () => new EventSourcingScenario(StoreKind.Postgres)),
        new("etl-sqlite", "ETL load", "SQLite", Requirement.None,
            $"a CSV file of the orders (23 columns, about 320 B a row, written before the timed run) → parse (Sep) → price (the shared handler) → append to a table in batches of {EtlScenario.BatchSize:N0}, each committed with its bookmark in one transaction (exactly once); WAL, synchronous=NORMAL (the sink's setting)",
            () => new EtlScenario(EtlTarget.Sqlite)),
        new("etl-postgres", "ETL load", "PostgreSQL", Requirement.Postgres,
            $"the same into PostgreSQL 15: binary COPY per batch of {EtlScenario.BatchSize:N0}, committed with its bookmark in one transaction; synchronous_commit on",
            () => new EtlScenario(EtlTarget.Postgres)),
        new("wf-inmemory", "3-step workflow", "in-memory", Requirement.None,
            $"{WorkflowScenario.Callers} callers, each starting a workflow (price → reserve → confirm, three activities) and awaiting its result; histories in memory, activities dispatched in process; {InMemory}",
            () => new WorkflowScenario(StoreKind.InMemory, TransportKind.InMemory)),
        new("wf-sqlite", "3-step workflow", "SQLite", Requirement.None,
            "the same with histories on a SQLite file: WAL, synchronous=FULL, each workflow task one unit of work (history append, summary, activity tasks); activities in process",
            () => new WorkflowScenario(StoreKind.Sqlite, TransportKind.InMemory)),
        new("wf-postgres", "3-step workflow", "PostgreSQL", Requirement.Postgres,
            "the same with histories on PostgreSQL 15: synchronous_commit on; activities in process",
            () => new WorkflowScenario(StoreKind.Postgres, TransportKind.InMemory)),
        new("wf-rabbitmq", "3-step workflow", "SQLite + RabbitMQ", Requirement.RabbitMq,
            $"histories on SQLite (as above); activity tasks committed to the outbox with the history and relayed to a durable RabbitMQ queue, results back on another; {Rabbit}",
            () => new WorkflowScenario(StoreKind.Sqlite, TransportKind.RabbitMq)),
    ];
}
