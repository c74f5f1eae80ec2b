using System.ComponentModel.DataAnnotations;
using Npgsql;

namespace Patterns.Postgres;

/// <summary>Options for <see cref="PostgresEventStore"/>.</summary>
/// <remarks>
/// Set either <see cref="ConnectionString"/> (the store then creates and owns an <see cref="NpgsqlDataSource"/>)
/// or <see cref="DataSource"/> (shared with the application, which disposes it). Every store on the same
/// database and <see cref="Schema"/> shares one event log, so several processes can append and subscribe.
/// </remarks>
public sealed class PostgresEventStoreOptions
{
    /// <summary>Gets or sets the Npgsql connection string, used when <see cref="DataSource"/> is null.</summary>
    /// <value>Default null. Size the pool (<c>Maximum Pool Size</c>, default 100) for the number of concurrent appends and reads.</value>
    public string? ConnectionString { get; set; }

    /// <summary>Gets or sets the data source to take connections from; the store does not dispose it.</summary>
    /// <value>Default null: the store builds one from <see cref="ConnectionString"/>.</value>
    public NpgsqlDataSource? DataSource { get; set; }

    /// <summary>Gets or sets the database schema that holds the store's tables and functions.</summary>
    /// <value>
    /// Default <c>patterns</c>. Lower-case letters, digits and underscores, starting with a letter or underscore,
    /// at most 48 characters (the name is also used for the notification channel and lock keys).
    /// </value>
    [Required]
    [RegularExpression(SchemaPattern, ErrorMessage = "Schema must be lower-case letters, digits and underscores, start with a letter or underscore, and be at most 48 characters.")]
    public string Schema { get; set; } = "patterns";

    /// <summary>Gets or sets how many rows one read query returns before the next page is fetched.</summary>
    /// <value>Default 500. Reads hold at most one page's worth of rows from the server at a time.</value>
    [Range(1, 100_000)]
    public int PageSize { get; set; } = 500;

    /// <summary>
    /// Gets or sets how long <see cref="PostgresEventStore.WaitForEventsAsync"/> waits for a notification before it
    /// returns anyway so the caller polls (also the only wake-up when notifications are off or the listening connection is down).
    /// </summary>
    /// <value>Default 1 second. Must be positive.</value>
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Gets or sets whether appends send a PostgreSQL <c>NOTIFY</c> and waiters <c>LISTEN</c> on a dedicated connection.</summary>
    /// <value>
    /// Default true. When false, waiters in this process are still woken by this store's own appends, and appends
    /// made by other processes are seen on the next <see cref="PollInterval"/>.
    /// </value>
    public bool Notifications { get; set; } = true;

    /// <summary>Gets or sets whether the schema is created or upgraded on first use.</summary>
    /// <value>
    /// Default true. When false, call <see cref="PostgresEventStore.MigrateAsync"/> (for example from a deployment step)
    /// before using the store; operations on a missing schema then fail with <see cref="InvalidOperationException"/>.
    /// </value>
    public bool AutoCreateSchema { get; set; } = true;

    /// <summary>Gets or sets the clock used for poll intervals, listener reconnect delays, lease expiry, and inbox, checkpoint and outbox timestamps.</summary>
    /// <value>Default null: <see cref="System.TimeProvider.System"/>.</value>
    public TimeProvider? TimeProvider { get; set; }

    internal const string SchemaPattern = "^[a-z_][a-z0-9_]{0,47}$";
}
