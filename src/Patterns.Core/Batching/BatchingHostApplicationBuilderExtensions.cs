using Microsoft.Extensions.DependencyInjection;
using Patterns.Batching;

namespace Microsoft.Extensions.Hosting;

/// <summary>The short form of the batching registration on an <see cref="IHostApplicationBuilder"/>.</summary>
public static class BatchingHostApplicationBuilderExtensions
{
    /// <summary>Adds batching: in-process batchers and batch consumers of queues and subscriptions.</summary>
    /// <param name="builder">The host builder.</param>
    /// <param name="configure">Registers batchers and batch consumers.</param>
    /// <returns>The batching builder.</returns>
    public static BatchingBuilder AddBatching(this IHostApplicationBuilder builder, Action<BatchingBuilder>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        return builder.Services.AddBatching(configure);
    }
}
