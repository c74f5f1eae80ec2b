using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Patterns.Hosting;
using Patterns.Messaging;
using Patterns.Serialization;
using Patterns.Transport;

namespace Patterns.Testing;

/// <summary>Registers the test utilities on the shared Patterns builder.</summary>
public static class PatternsTestingExtensions
{
    /// <summary>
    /// Records the traffic of whatever transport is configured into a <see cref="PatternsTestHarness"/> singleton. The order
    /// does not matter: the harness wraps the transport when it is created, also one chosen after this call.
    /// </summary>
    /// <param name="builder">The Patterns builder.</param>
    /// <returns>The builder.</returns>
    public static PatternsBuilder UseTestHarness(this PatternsBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var services = builder.Services;
        services.TryAddSingleton<PatternsTestHarness>(static sp => new PatternsTestHarness(
            sp.GetService<IMessageSerializer>(), sp.GetService<MessageTypeRegistry>()));
        if (!services.Any(d => d.ImplementationInstance is TransportDecorator { Name: HarnessDecorator }))
        {
            services.AddSingleton(new TransportDecorator(
                HarnessDecorator, static (transport, sp) => new RecordingTransport(transport, sp.GetRequiredService<PatternsTestHarness>())));
        }

        return builder;
    }

    /// <summary>Virtual time for every pattern: registers <paramref name="timeProvider"/> as the host's <see cref="TimeProvider"/>.</summary>
    /// <param name="builder">The Patterns builder.</param>
    /// <param name="timeProvider">The clock tests move by hand.</param>
    /// <returns>The builder.</returns>
    public static PatternsBuilder UseTimeProvider(this PatternsBuilder builder, TimeProvider timeProvider)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(timeProvider);
        builder.Services.Replace(ServiceDescriptor.Singleton(timeProvider));
        return builder;
    }

    private const string HarnessDecorator = "Patterns.Testing.Harness";
}
