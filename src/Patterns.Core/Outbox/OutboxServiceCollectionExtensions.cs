using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Patterns.Outbox;
using Patterns.Storage;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers the transactional outbox on an <see cref="IServiceCollection"/>. Calling it again changes nothing but the options.</summary>
public static class OutboxServiceCollectionExtensions
{
    /// <summary>
    /// Adds the transactional outbox: <see cref="IStoreSession"/> (transient: each resolution is a new session) that commits events, documents, outgoing
    /// messages and inbox entries in one unit of work, and the relay that hands committed messages to the transport.
    /// The store is the one chosen with <c>AddEventSourcing(es => es.UseSqlite(...))</c> (or <c>UsePostgres</c>); in
    /// memory unless another is chosen.
    /// </summary>
    /// <param name="services">The services.</param>
    /// <param name="configure">Configures <see cref="OutboxOptions"/>.</param>
    /// <returns>The services.</returns>
    public static IServiceCollection AddOutbox(this IServiceCollection services, Action<OutboxOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.AddEventSourcing();
        var options = services.AddOptions<OutboxOptions>().ValidateOnStart();
        if (configure is not null)
        {
            options.Configure(configure);
        }

        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<OutboxOptions>, OutboxOptionsValidator>());
        // Transient, not scoped: a delegate handler's context.Services is the root provider, where a scoped session would be
        // one session shared by every message handled at the same time.
        services.TryAddTransient<IStoreSession>(static sp => new StoreSession(sp));
        services.TryAddSingleton(static _ => new OutboxHandoff());
        if (!services.Any(static d => d.ServiceType == typeof(OutboxRelay)))
        {
            services.AddSingleton(static sp => new OutboxRelay(
                sp,
                sp.GetRequiredService<IOptions<OutboxOptions>>(),
                sp.GetRequiredService<TimeProvider>(),
                PatternsServiceCollectionExtensions.LoggerFactory(sp)));
            services.AddSingleton<IHostedService>(static sp => sp.GetRequiredService<OutboxRelay>());
        }

        return services;
    }
}

/// <summary>Checks <see cref="OutboxOptions"/> and that the chosen store has an outbox, at host start, reporting every problem at once.</summary>
internal sealed partial class OutboxOptionsValidator(IServiceProviderIsService services) : IValidateOptions<OutboxOptions>
{
    private readonly OutboxOptionsAttributesValidator _attributes = new();

    public ValidateOptionsResult Validate(string? name, OutboxOptions options)
    {
        var result = _attributes.Validate(name, options);
        var errors = result.Failed ? [.. result.Failures] : new List<string>();
        LeaseRunner.ValidateDuration(errors, "OutboxOptions.LeaseDuration", options.LeaseDuration);

        if (options.RetryDelay <= TimeSpan.Zero || options.MaxRetryDelay < options.RetryDelay)
        {
            errors.Add($"OutboxOptions.RetryDelay must be positive and at most MaxRetryDelay (were {options.RetryDelay} and {options.MaxRetryDelay}).");
        }

        foreach (var (service, what) in new[] { (typeof(IUnitOfWorkStorage), "units of work"), (typeof(IOutboxStore), "an outbox"), (typeof(ILeaseStore), "leases") })
        {
            if (!services.IsService(service))
            {
                errors.Add($"The outbox needs a store with {what} ({service.Name}); the store chosen in AddEventSourcing(...) has none.");
            }
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}

[OptionsValidator]
internal sealed partial class OutboxOptionsAttributesValidator : IValidateOptions<OutboxOptions>;
