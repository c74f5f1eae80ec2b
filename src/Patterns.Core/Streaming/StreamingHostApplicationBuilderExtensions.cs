using Microsoft.Extensions.DependencyInjection;
using Patterns.Streaming;

namespace Microsoft.Extensions.Hosting;

/// <summary>The short form of the streaming registration on an <see cref="IHostApplicationBuilder"/>.</summary>
public static class StreamingHostApplicationBuilderExtensions
{
    /// <summary>Adds streaming: pipelines that run as hosted services.</summary>
    /// <param name="builder">The host builder.</param>
    /// <param name="configure">Registers pipelines.</param>
    /// <returns>The streaming builder.</returns>
    public static StreamingBuilder AddStreaming(this IHostApplicationBuilder builder, Action<StreamingBuilder>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        return builder.Services.AddStreaming(configure);
    }
}
