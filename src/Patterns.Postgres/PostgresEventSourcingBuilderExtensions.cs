using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Patterns.Storage;
using Patterns.Postgres;

namespace Patterns.EventSourcing;

/// <summary>Chooses the PostgreSQL store for event sourcing: <c>builder.AddEventSourcing(es => es.UsePostgres(connectionString))</c>.</summary>
public static class PostgresEventSourcingBuilderExtensions
{
    /// <summary>
    /// Stores events, snapshots, checkpoints, read models and inbox entries in PostgreSQL, replacing the store chosen before.
    /// </summary>
    /// <param name="builder">The event sourcing builder.</param>
    /// <param name="connectionString">The Npgsql connection string.</param>
    /// <param name="configure">Adjusts the other options (schema, page size, poll interval...).</param>
    /// <returns>The builder.</returns>
    /// <remarks>
    /// The options are validated when the host starts (every problem listed at once). The schema is created on first
    /// use unless <see cref="PostgresEventStoreOptions.AutoCreateSchema"/> is off. Unless
    /// <see cref="PostgresEventStoreOptions.TimeProvider"/> is set, the store uses the application's <see cref="TimeProvider"/>.
    /// The container disposes the store (its listening connection and its data source) when the host stops.
    /// It also registers <see cref="PostgresStorageErrorClassifier"/> as an <see cref="IStorageErrorClassifier"/> service.
    /// </remarks>
    public static EventSourcingBuilder UsePostgres(this EventSourcingBuilder builder, string connectionString, Action<PostgresEventStoreOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentException.ThrowIfNullOrWhiteSpace(connectionString);
        return builder.UsePostgres(o =>
        {
            o.ConnectionString = connectionString;
            configure?.Invoke(o);
        });
    }

    /// <summary>Stores everything in PostgreSQL, configured by <paramref name="configure"/> (which must set a connection string or a data source).</summary>
    /// <param name="builder">The event sourcing builder.</param>
    /// <param name="configure">Sets <see cref="PostgresEventStoreOptions.ConnectionString"/> or <see cref="PostgresEventStoreOptions.DataSource"/>, and any other option.</param>
    /// <returns>The builder.</returns>
    public static EventSourcingBuilder UsePostgres(this EventSourcingBuilder builder, Action<PostgresEventStoreOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(configure);
        builder.Services.AddOptions<PostgresEventStoreOptions>().Configure(configure).ValidateOnStart();
        builder.Services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<PostgresEventStoreOptions>, PostgresEventStoreOptionsValidator>());
        builder.Services.TryAddEnumerable(ServiceDescriptor.Singleton<IStorageErrorClassifier>(PostgresStorageErrorClassifier.Instance));
        return builder.UseStorage(static sp => new PostgresEventStore(
            sp.GetRequiredService<IOptions<PostgresEventStoreOptions>>().Value,
            sp.GetRequiredService<TimeProvider>(),
            sp.GetService<ILoggerFactory>()?.CreateLogger<PostgresEventStore>()));
    }
}
