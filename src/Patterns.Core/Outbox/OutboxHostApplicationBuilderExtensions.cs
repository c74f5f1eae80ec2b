using Microsoft.Extensions.DependencyInjection;
using Patterns.Outbox;

namespace Microsoft.Extensions.Hosting;

/// <summary>Short form of the outbox registration on an <see cref="IHostApplicationBuilder"/>.</summary>
public static class OutboxHostApplicationBuilderExtensions
{
    /// <summary>Adds the transactional outbox (see <see cref="OutboxServiceCollectionExtensions.AddOutbox"/>).</summary>
    /// <param name="builder">The host builder.</param>
    /// <param name="configure">Configures <see cref="OutboxOptions"/>.</param>
    /// <returns>The host builder.</returns>
    public static IHostApplicationBuilder AddOutbox(this IHostApplicationBuilder builder, Action<OutboxOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Services.AddOutbox(configure);
        return builder;
    }
}
