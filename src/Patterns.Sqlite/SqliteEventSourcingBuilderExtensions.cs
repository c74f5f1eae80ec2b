using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Patterns.Storage;
using Patterns.Sqlite;

namespace Patterns.EventSourcing;

/// <summary>Chooses the SQLite store for event sourcing: <c>builder.AddEventSourcing(es => es.UseSqlite("Data Source=app.db"))</c>.</summary>
public static class SqliteEventSourcingBuilderExtensions
{
    /// <summary>
    /// Stores events, snapshots, checkpoints, read models and inbox entries in a SQLite file (WAL, <c>synchronous=FULL</c>),
    /// replacing the store chosen before.
    /// </summary>
    /// <param name="builder">The event sourcing builder.</param>
    /// <param name="connectionString">A connection string (<c>Data Source=app.db</c>) or a file path.</param>
    /// <param name="configure">Adjusts the other options.</param>
    /// <returns>The builder.</returns>
    /// <remarks>
    /// The options are validated when the host starts (every problem listed at once); the database is opened, and its
    /// schema created, on first use. Unless <see cref="SqliteEventStoreOptions.TimeProvider"/> is set, the store uses
    /// the application's <see cref="TimeProvider"/>. The container disposes the store when the host stops, after the
    /// writes still queued have committed.
    /// It also registers <see cref="SqliteStorageErrorClassifier"/> as an <see cref="IStorageErrorClassifier"/> service.
    /// </remarks>
    public static EventSourcingBuilder UseSqlite(this EventSourcingBuilder builder, string connectionString, Action<SqliteEventStoreOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentException.ThrowIfNullOrWhiteSpace(connectionString);
        return builder.UseSqlite(o =>
        {
            o.ConnectionString = connectionString;
            configure?.Invoke(o);
        });
    }

    /// <summary>Stores everything in a SQLite file configured by <paramref name="configure"/> (which must set the connection string).</summary>
    /// <param name="builder">The event sourcing builder.</param>
    /// <param name="configure">Sets <see cref="SqliteEventStoreOptions.ConnectionString"/> and any other option.</param>
    /// <returns>The builder.</returns>
    public static EventSourcingBuilder UseSqlite(this EventSourcingBuilder builder, Action<SqliteEventStoreOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(configure);
        builder.Services.AddOptions<SqliteEventStoreOptions>().Configure(configure).ValidateOnStart();
        builder.Services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<SqliteEventStoreOptions>, SqliteEventStoreOptionsValidator>());
        builder.Services.TryAddEnumerable(ServiceDescriptor.Singleton<IStorageErrorClassifier>(SqliteStorageErrorClassifier.Instance));
        return builder.UseStorage(static sp => SqliteEventStore.Create(
            sp.GetRequiredService<IOptions<SqliteEventStoreOptions>>().Value,
            sp.GetRequiredService<TimeProvider>(),
            sp.GetService<ILoggerFactory>()));
    }
}
