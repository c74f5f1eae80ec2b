using Patterns.EventSourcing;
using Patterns.Storage;

namespace Patterns.Conformance;

/// <summary>A deposit appended by the process-kill tests' children.</summary>
/// <param name="Amount">The amount, positive.</param>
public sealed record KillDeposit(long Amount);

/// <summary>The process-kill tests' read model: how many deposits an account's fold applied, and their sum.</summary>
/// <param name="Count">Deposits folded; a deposit folded twice counts twice.</param>
/// <param name="Sum">Their amounts' sum.</param>
public sealed record KillTotal(long Count, long Sum);

/// <summary>
/// The fold projection the process-kill tests run in child processes and in the test process alike: one
/// <see cref="KillTotal"/> per account stream, not idempotent on purpose, so an event folded twice (or missed) shows.
/// </summary>
public static class KillProjection
{
    /// <summary>The projection's name (its checkpoint and lease are named after it).</summary>
    public const string Name = "kill-totals";

    /// <summary>The document collection it writes.</summary>
    public const string Collection = "kill-totals";

    /// <summary>How many account streams the children append to.</summary>
    public const int Accounts = 5;

    /// <summary>The lease duration every process of these tests uses, so that a standby takes over within about a second.</summary>
    public static readonly TimeSpan LeaseDuration = TimeSpan.FromSeconds(1);

    /// <summary>The queue the outbox kill test's children send to through the outbox.</summary>
    public const string OutboxQueue = "kill-outbox";

    /// <summary>The stream of account <paramref name="index"/>.</summary>
    /// <param name="index">0 to <see cref="Accounts"/> - 1.</param>
    /// <returns>The stream id.</returns>
    public static string Account(int index) => "kill-account-" + index.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Registers the deposit event, the fold projection and the short lease.</summary>
    /// <param name="builder">The event-sourcing builder; the store is chosen by the caller.</param>
    /// <returns>The builder.</returns>
    public static EventSourcingBuilder Configure(EventSourcingBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        return builder
            .Configure(o => o.LeaseDuration = LeaseDuration)
            .AddEvent<KillDeposit>()
            .AddDocumentProjection<KillTotal>(
                Name,
                Collection,
                e => e.StreamId,
                (current, e) => e.Data is KillDeposit deposit ? new KillTotal((current?.Count ?? 0) + 1, (current?.Sum ?? 0) + deposit.Amount) : current,
                o => o.BatchSize = 16);
    }
}

/// <summary>
/// The store-writing handler of the inbox process-kill test: handling message <c>id</c> is one unit of work that claims
/// the id in the inbox, appends one event to <see cref="Stream"/> (at any version, so that only the inbox can stop a
/// second copy) and sends the id to <see cref="Queue"/> through the outbox.
/// </summary>
public static class KillInbox
{
    /// <summary>The consumer whose inbox records the handled ids.</summary>
    public const string Consumer = "kill-inbox-handler";

    /// <summary>The queue the handler sends to through the outbox (no relay runs: the messages stay in the outbox).</summary>
    public const string Queue = "kill-inbox";

    /// <summary>The prefix of the handler's streams.</summary>
    public const string StreamPrefix = "kill-inbox-";

    /// <summary>The id of message number <paramref name="number"/>.</summary>
    /// <param name="number">The message number, from 0.</param>
    /// <returns>The message id.</returns>
    public static string MessageId(int number) => number.ToString("D6", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>The stream the handler of message <paramref name="id"/> appends to.</summary>
    /// <param name="id">The message id.</param>
    /// <returns>The stream id.</returns>
    public static string Stream(string id) => StreamPrefix + id;

    /// <summary>The unit of work that handles message <paramref name="id"/>.</summary>
    /// <param name="id">The message id.</param>
    /// <returns>The unit: inbox claim, append and outbox message.</returns>
    public static UnitOfWork Handle(string id) =>
        new UnitOfWork()
            .ClaimInbox(Consumer, id)
            .Append(Stream(id), ExpectedVersion.Any, [new SerializedEvent(Guid.NewGuid(), "kill.handled", "{}"u8.ToArray(), DateTimeOffset.UtcNow)])
            .Enqueue(new OutboxMessage(Queue, OutboxMessageKind.Send, System.Text.Encoding.UTF8.GetBytes(id)));
}

/// <summary>A click the streaming process-kill test's pipeline counts per user and 10-second window.</summary>
/// <param name="User">The user.</param>
/// <param name="At">The event time.</param>
public sealed record KillClick(string User, DateTimeOffset At);

/// <summary>
/// The streaming process-kill test's pipeline: clicks from a RabbitMQ queue, counted per user in 10-second tumbling
/// windows, each count sent through the outbox (<see cref="Streaming.DataStream{T}.SendToOutbox"/>) in the unit of work
/// of the snapshot that produced it. Snapshots go to the store every 100 ms or every 16 held messages.
/// </summary>
public static class KillStream
{
    /// <summary>The pipeline's name (its snapshot document is named after it).</summary>
    public const string Name = "kill-stream";

    /// <summary>The queue the outbox messages go to (no relay runs: they stay in the outbox).</summary>
    public const string Results = "kill-stream-counts";

    /// <summary>
    /// The input queue's capacity (the test and the children declare it alike): the backlog grows when children take
    /// fewer clicks than the test adds before each, and a full queue would hold the test's sends back.
    /// </summary>
    public const int QueueCapacity = 100_000;

    /// <summary>The user of the last click, far ahead in time, which fires every window; its window is not sent.</summary>
    public const string End = "end";

    /// <summary>The epoch of the clicks' event time.</summary>
    public static readonly DateTimeOffset Epoch = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    /// <summary>The input queue of a test database: one per file or schema, so that parallel cases do not share it.</summary>
    /// <param name="target">The file or schema.</param>
    /// <returns>The queue name.</returns>
    public static string Queue(string target) =>
        "kill-stream-" + Patterns.Messaging.PartitionHash.OfString(target).ToString("x8", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Builds the pipeline.</summary>
    /// <param name="services">The container (transport, store).</param>
    /// <param name="target">The file or schema.</param>
    /// <param name="snapshots">The store snapshot store.</param>
    /// <param name="seen">Called for each click that enters the pipeline.</param>
    /// <returns>The runnable pipeline.</returns>
    public static Streaming.StreamPipeline Pipeline(IServiceProvider services, string target, Streaming.IStreamSnapshotStore snapshots, Action<KillClick> seen) =>
        Streaming.DataStream.FromQueue<KillClick>(
                services,
                Queue(target),
                new Streaming.StreamOptions
                {
                    Name = Name,
                    SnapshotStore = snapshots,
                    SnapshotInterval = TimeSpan.FromMilliseconds(100),
                    MaxUnacknowledged = 16,
                    LoggerFactory = Microsoft.Extensions.DependencyInjection.ServiceProviderServiceExtensions.GetService<Microsoft.Extensions.Logging.ILoggerFactory>(services),
                })
            .Select(c =>
            {
                seen(c);
                return c;
            })
            // The source lets the transport run MaxUnacknowledged (16) handlers at once, with more prefetched behind
            // them, so clicks enter some dozens of places out of queue order (two a second): the bound covers two
            // minutes of event time.
            .WithEventTime(c => c.At, TimeSpan.FromMinutes(2))
            .KeyBy(c => c.User)
            .Window(Streaming.WindowSpec.Tumbling(TimeSpan.FromSeconds(10)), name: "per-user")
            .Count()
            .Where(r => r.Key != End)
            .SendToOutbox(Microsoft.Extensions.DependencyInjection.ServiceProviderServiceExtensions.GetRequiredService<Queues.IQueueSender>(services), Results);
}

/// <summary>
/// The outbox relay takeover test's model: children commit store sessions that append to <c>kill-relay-&lt;id&gt;</c> and
/// send a <see cref="KillDeposit"/> with message id <c>id</c> through the outbox to <see cref="Queue"/> on RabbitMQ, and
/// run the relay; a consumer in the test process records each arrival and, claiming the message in its inbox, appends
/// one event to <see cref="ReceivedStream"/> in the same unit of work.
/// </summary>
public static class KillRelay
{
    /// <summary>The prefix of the children's streams (one per committed message).</summary>
    public const string StreamPrefix = "kill-relay-";

    /// <summary>The prefix of the consumer's streams (one event per message it handled, if its inbox works).</summary>
    public const string ReceivedPrefix = "kill-relay-recv-";

    /// <summary>The stream of the commits that must fail (a wrong expected version): it must never exist.</summary>
    public const string ConflictStream = "kill-relay-conflict";

    /// <summary>The lease the relay takes (the children report whether they hold it).</summary>
    public const string Lease = "outbox-relay";

    /// <summary>The queue of a test database: one per file or schema, so that parallel cases do not share it.</summary>
    /// <param name="target">The file or schema.</param>
    /// <returns>The queue name.</returns>
    public static string Queue(string target) =>
        "kill-relay-" + Patterns.Messaging.PartitionHash.OfString(target).ToString("x8", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>The stream the consumer appends to for message <paramref name="id"/>.</summary>
    /// <param name="id">The message id.</param>
    /// <returns>The stream id.</returns>
    public static string ReceivedStream(Guid id) => ReceivedPrefix + id.ToString("N");
}

/// <summary>
/// A lease store that prints <c>state Live</c> when this process takes <see cref="KillRelay.Lease"/> and <c>state Standby</c>
/// when it cannot or loses it (only on a change), so that the test knows which child runs the relay.
/// </summary>
/// <param name="inner">The store's leases.</param>
/// <param name="print">Prints a line to the test.</param>
public sealed class KillReportingLeases(ILeaseStore inner, Action<string> print) : ILeaseStore, ILeaseWatch
{
    private readonly Lock _gate = new();
    private string? _last;

    /// <inheritdoc />
    public async ValueTask<Lease?> TryAcquireLeaseAsync(string name, string owner, TimeSpan duration, CancellationToken cancellationToken = default)
    {
        var lease = await inner.TryAcquireLeaseAsync(name, owner, duration, cancellationToken);
        if (name == KillRelay.Lease)
        {
            Report(lease is null ? "state Standby" : "state Live");
        }

        return lease;
    }

    /// <inheritdoc />
    public async ValueTask<Lease?> RenewLeaseAsync(Lease lease, TimeSpan duration, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(lease);
        var renewed = await inner.RenewLeaseAsync(lease, duration, cancellationToken);
        if (lease.Name == KillRelay.Lease && renewed is null)
        {
            Report("state Standby");
        }

        return renewed;
    }

    /// <inheritdoc />
    public ValueTask ReleaseLeaseAsync(Lease lease, CancellationToken cancellationToken = default) => inner.ReleaseLeaseAsync(lease, cancellationToken);

    /// <inheritdoc />
    public ValueTask WaitForLeaseAsync(string name, TimeSpan timeout, CancellationToken cancellationToken = default) =>
        inner is ILeaseWatch watch ? watch.WaitForLeaseAsync(name, timeout, cancellationToken) : new ValueTask(Task.Delay(timeout, cancellationToken));

    private void Report(string line)
    {
        lock (_gate)
        {
            if (line == _last)
            {
                return;
            }

            _last = line;
        }

        print(line);
    }
}
