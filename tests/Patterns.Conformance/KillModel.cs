using Patterns.EventSourcing;

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
