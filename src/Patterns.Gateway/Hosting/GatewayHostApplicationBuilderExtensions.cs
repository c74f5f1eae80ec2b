using Microsoft.Extensions.DependencyInjection;
using Patterns.Gateway;

namespace Microsoft.Extensions.Hosting;

/// <summary>Registers the gateway on a host builder.</summary>
public static class GatewayHostApplicationBuilderExtensions
{
    /// <summary>Adds the gateway (see <see cref="GatewayServiceCollectionExtensions.AddGateway(IServiceCollection, Action{GatewayBuilder}?)"/>).</summary>
    /// <param name="builder">The host builder.</param>
    /// <param name="configure">Chooses where routes come from and adds transforms.</param>
    /// <returns>The gateway builder.</returns>
    public static GatewayBuilder AddGateway(this IHostApplicationBuilder builder, Action<GatewayBuilder>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        return builder.Services.AddGateway(configure);
    }
}
