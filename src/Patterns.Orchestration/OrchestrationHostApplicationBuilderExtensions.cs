using Microsoft.Extensions.DependencyInjection;
using Patterns.Orchestration;

namespace Microsoft.Extensions.Hosting;

/// <summary>Short form of the orchestration registration on an <see cref="IHostApplicationBuilder"/>.</summary>
public static class OrchestrationHostApplicationBuilderExtensions
{
    /// <summary>Adds durable workflows (see <see cref="OrchestrationServiceCollectionExtensions.AddOrchestration"/>).</summary>
    /// <param name="builder">The host builder.</param>
    /// <param name="configure">Registers workflows and activities and sets options.</param>
    /// <returns>The host builder.</returns>
    public static IHostApplicationBuilder AddOrchestration(this IHostApplicationBuilder builder, Action<OrchestrationBuilder>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Services.AddOrchestration(configure);
        return builder;
    }
}
