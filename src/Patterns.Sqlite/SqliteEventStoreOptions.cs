using System.ComponentModel.DataAnnotations;

namespace Patterns.Sqlite;

/// <summary>Options for <see cref="SqliteEventStore"/>.</summary>
/// <remarks>
/// Durability is not configurable: the store always runs the database in WAL journal mode with
/// <c>synchronous=FULL</c>, so an append is acknowledged only after its commit record has been synced to disk.
/// </remarks>
public sealed class SqliteEventStoreOptions
{
    /// <summary>Gets or sets the database: a Microsoft.Data.Sqlite connection string (<c>Data Source=events.db</c>) or a plain file path.</summary>
    /// <value>
    /// Required. A value without an <c>=</c> is taken as a file path. The directory must exist; the file is created on first
    /// use. In-memory and read-only databases are refused: the store needs a file that several connections share.
    /// </value>
    [Required]
    public string ConnectionString { get; set; } = "";

    /// <summary>Gets or sets the prefix of every table the store creates, so several stores can share one database file.</summary>
    /// <value>Default <c>patterns_</c>. Letters, digits and underscores; it must not start with a digit.</value>
    [Required]
    [RegularExpression("^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
    public string TablePrefix { get; set; } = "patterns_";

    /// <summary>Gets or sets how many rows a read fetches per query while it pages through a stream, the log or a collection.</summary>
    /// <value>Default 512. Memory held by a read is bounded by one page.</value>
    [Range(1, 100_000)]
    public int PageSize { get; set; } = 512;

    /// <summary>Gets or sets how long a connection waits for a lock held by another connection or process before it fails.</summary>
    /// <value>Default 30 seconds; from 0 to 1 hour.</value>
    public TimeSpan BusyTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Gets or sets the most queued writes (appends, deletes, checkpoints, documents) the writer commits in one transaction.</summary>
    /// <value>Default 256. Writes queued while a commit is in flight share the next commit (group commit).</value>
    [Range(1, 100_000)]
    public int MaxWritesPerCommit { get; set; } = 256;

    /// <summary>Gets or sets the number of events after which the writer stops adding appends to a commit.</summary>
    /// <value>Default 10,000. A single append larger than this is still committed whole.</value>
    [Range(1, 10_000_000)]
    public int MaxEventsPerCommit { get; set; } = 10_000;

    /// <summary>Gets or sets how many writes may wait for the writer before callers wait for room (back-pressure).</summary>
    /// <value>Default 4096.</value>
    [Range(1, 1_000_000)]
    public int WriteQueueCapacity { get; set; } = 4096;

    /// <summary>
    /// Gets or sets how often <see cref="SqliteEventStore.WaitForEventsAsync"/> and <see cref="SqliteEventStore.WaitForOutboxAsync"/>
    /// return without an in-process signal, so that readers notice events and outbox messages committed by another process
    /// (or another store instance) on the same file: the fallback when <see cref="ChangeCheckInterval"/> is off, or its
    /// check fails.
    /// </summary>
    /// <value>Default 1 second; from 1 millisecond to 1 day.</value>
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Gets or sets how often the store checks whether another connection (another process, or another store instance
    /// on the same file) committed, while something waits in <see cref="SqliteEventStore.WaitForEventsAsync"/> or
    /// <see cref="SqliteEventStore.WaitForOutboxAsync"/>. A commit it sees wakes those waits at once, instead of at
    /// <see cref="PollInterval"/>. Each check is <c>PRAGMA data_version</c> on a connection of its own, which reads SQLite's
    /// shared-memory WAL index only: no disk read and no lock when nothing changed.
    /// </summary>
    /// <value>
    /// Default 20 milliseconds; from 1 millisecond to 1 day, or <see cref="TimeSpan.Zero"/> to turn the checks off (other
    /// connections' commits are then noticed at <see cref="PollInterval"/>). Measured on the system clock, not
    /// <see cref="TimeProvider"/>.
    /// </value>
    public TimeSpan ChangeCheckInterval { get; set; } = TimeSpan.FromMilliseconds(20);

    /// <summary>Gets or sets the clock for poll intervals, inbox and outbox timestamps, and lease expiry.</summary>
    /// <value>Default null: <see cref="TimeProvider.System"/> (the host's <see cref="TimeProvider"/> when registered through the host builder).</value>
    public TimeProvider? TimeProvider { get; set; }
}
