using Microsoft.Extensions.DependencyInjection;
using Patterns.Etl;

namespace Microsoft.Extensions.Hosting;

/// <summary>ETL on the host builder, and running a job once from the command line.</summary>
public static class EtlHostExtensions
{
    /// <summary>Adds ETL jobs (see <see cref="EtlServiceCollectionExtensions.AddEtl"/>).</summary>
    /// <param name="builder">The host builder.</param>
    /// <param name="configure">Adds the jobs.</param>
    /// <returns>The ETL builder.</returns>
    public static EtlBuilder AddEtl(this IHostApplicationBuilder builder, Action<EtlBuilder>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        return builder.Services.AddEtl(configure);
    }

    /// <summary>
    /// When <paramref name="args"/> hold <c>--etl-run &lt;job&gt;</c> (and optionally <c>--etl-partition &lt;p&gt;</c>), runs
    /// that job once, without starting the host's services, and returns its result; otherwise returns <see langword="null"/>
    /// and the caller runs the host as usual.
    /// </summary>
    /// <param name="host">The built host.</param>
    /// <param name="args">The command line.</param>
    /// <param name="cancellationToken">Stops the run gracefully.</param>
    /// <returns>The result, or <see langword="null"/> when the command line asks for no job.</returns>
    public static async Task<EtlRunResult?> RunEtlFromCommandLineAsync(this IHost host, string[] args, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(host);
        ArgumentNullException.ThrowIfNull(args);
        var job = Value(args, "--etl-run");
        if (job is null)
        {
            return null;
        }

        var options = Value(args, "--etl-partition") is { } partition ? new EtlRunOptions { Partition = partition } : null;
        return await host.Services.GetRequiredService<IEtlJobs>().RunAsync(job, options, cancellationToken).ConfigureAwait(false);

        static string? Value(string[] args, string name)
        {
            var index = Array.IndexOf(args, name);
            return index < 0 ? null : index + 1 < args.Length ? args[index + 1] : throw new ArgumentException($"{name} needs a value.", nameof(args));
        }
    }
}
