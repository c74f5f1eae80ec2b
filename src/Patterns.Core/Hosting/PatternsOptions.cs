namespace Patterns.Hosting;

/// <summary>Options shared by every pattern.</summary>
public sealed class PatternsOptions
{
    /// <summary>Gets or sets how long consumers may keep handling buffered and in-flight messages after the host starts stopping.</summary>
    /// <value>
    /// Default 30 seconds. The host's own shutdown timeout also bounds it. When it passes, handlers see their token
    /// cancelled; on the in-memory transport a handler that ignores cancellation is abandoned one second later (its
    /// message logged and counted as dropped), so shutdown cannot hang.
    /// </value>
    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Gets or sets a value indicating whether every consumer group skips messages whose id it has handled before (inbox
    /// de-duplication), for effectively-once handling on top of a broker's at-least-once delivery. It works the same on
    /// every transport: the kernel's consumer path checks the inbox before the handler and records the id after it. A
    /// handler's <see cref="Outbox.IStoreSession"/> claims the id in the same transaction as its writes (its first commit),
    /// so of two copies handled at once in two processes only one commits its writes; effects outside the store are not
    /// covered by that and can happen twice.
    /// </summary>
    /// <value>
    /// Default <see langword="false"/>. The ids are kept in the <see cref="Storage.IInboxStore"/> registered in the container
    /// (a durable store, when the event store's storage provides one), or else in a bounded in-memory set of
    /// <see cref="InboxCapacity"/> ids per group (which does not survive a restart). A copy that arrives while another copy
    /// of the same message is being handled in this process waits for it, and is then skipped if that one was handled.
    /// </value>
    public bool Deduplicate { get; set; }

    /// <summary>Gets or sets how many message ids the in-memory inbox remembers per consumer group; the oldest are forgotten first.</summary>
    /// <value>Default 100,000.</value>
    [System.ComponentModel.DataAnnotations.Range(1, 100_000_000)]
    public int InboxCapacity { get; set; } = 100_000;

    /// <summary>Gets or sets how long a message is put off when the inbox store fails while checking it, before it is checked again.</summary>
    /// <value>Default 1 second. The put-off does not count as a delivery.</value>
    public TimeSpan InboxRetryDelay { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Gets or sets how long a durable inbox keeps a handled message id (the kernel's de-duplication, and the ids a
    /// stream's snapshots include). Older ids are removed by a background pass every hour (or every retention, when
    /// shorter), so the inbox does not grow without bound. A copy that arrives after its id was removed is handled again.
    /// </summary>
    /// <value>Default 7 days. <see cref="System.Threading.Timeout.InfiniteTimeSpan"/> keeps every id.</value>
    public TimeSpan InboxRetention { get; set; } = TimeSpan.FromDays(7);
}
