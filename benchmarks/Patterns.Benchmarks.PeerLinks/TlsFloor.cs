using System.Diagnostics;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Patterns.Benchmarks.PeerLinks;

/// <summary>
/// What TLS itself costs on this machine (a rough stopwatch run, not a report): AES-GCM over buffers of the sizes a
/// link writes, and an <see cref="SslStream"/> on a loopback socket against the plain socket, with small and large writes.
/// </summary>
internal static class TlsFloor
{
    public static async Task RunAsync()
    {
        foreach (var size in new[] { 256, 4096, 16 * 1024 })
        {
            Console.WriteLine($"AES-256-GCM encrypt, {size,6:N0}-byte records: {AesGcmRate(size)}");
        }

        var certificate = Pair.Certificate;
        foreach (var write in new[] { 200, 4096, 64 * 1024 })
        {
            foreach (var tls in new[] { false, true })
            {
                var (rate, cpu) = await StreamRateAsync(certificate, tls, write);
                Console.WriteLine($"{(tls ? "TLS   " : "plain ")} loopback stream, {write,6:N0}-byte writes: {rate,8:N0} MB/s, {cpu,6:N2} us CPU per write (both ends)");
            }
        }
    }

    private static string AesGcmRate(int size)
    {
        using var aes = new AesGcm(RandomNumberGenerator.GetBytes(32), 16);
        var nonce = new byte[12];
        var plain = new byte[size];
        var cipher = new byte[size];
        var tag = new byte[16];
        var bytes = 0L;
        var watch = Stopwatch.StartNew();
        var records = 0;

        // CPU time of this thread's process rather than wall time: on a shared machine the rate of a busy core is what counts.
        using var process = Process.GetCurrentProcess();
        var cpuBefore = process.TotalProcessorTime;
        while (watch.ElapsedMilliseconds < 500)
        {
            for (var i = 0; i < 1000; i++)
            {
                nonce[0]++;
                aes.Encrypt(nonce, plain, cipher, tag);
            }

            records += 1000;
            bytes += 1000L * size;
        }

        process.Refresh();
        var seconds = (process.TotalProcessorTime - cpuBefore).TotalSeconds;
        return $"{bytes / seconds / 1e6,8:N0} MB/s, {seconds * 1e6 / records,6:N3} us per record (CPU time)";
    }

    /// <summary>Writes 64 MiB (or 200,000 writes, whichever is less) from one socket end to the other, through TLS or not.</summary>
    private static async Task<(double MegabytesPerSecond, double CpuMicrosecondsPerWrite)> StreamRateAsync(X509Certificate2 certificate, bool tls, int write)
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        using var client = new TcpClient { NoDelay = true };
        var accepting = listener.AcceptTcpClientAsync();
        await client.ConnectAsync(IPAddress.Loopback, ((IPEndPoint)listener.LocalEndpoint).Port);
        using var server = await accepting;
        Stream sending = client.GetStream();
        Stream receiving = server.GetStream();
        if (tls)
        {
            var clientSsl = new SslStream(sending, false, (_, _, _, _) => true);
            var serverSsl = new SslStream(receiving, false, (_, _, _, _) => true);
            await Task.WhenAll(
                serverSsl.AuthenticateAsServerAsync(new SslServerAuthenticationOptions { ServerCertificate = certificate, ClientCertificateRequired = true }),
                clientSsl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions { TargetHost = "localhost", ClientCertificates = [certificate] }));
            sending = clientSsl;
            receiving = serverSsl;
        }

        var writes = (int)Math.Min(200_000, 64L * 1024 * 1024 / write);
        var total = (long)writes * write;
        var reading = Task.Run(async () =>
        {
            var buffer = new byte[64 * 1024];
            var read = 0L;
            while (read < total)
            {
                var n = await receiving.ReadAsync(buffer);
                if (n == 0)
                {
                    break;
                }

                read += n;
            }
        });
        var data = new byte[write];
        using var process = Process.GetCurrentProcess();
        var cpuBefore = process.TotalProcessorTime;
        var watch = Stopwatch.StartNew();
        for (var i = 0; i < writes; i++)
        {
            await sending.WriteAsync(data);
        }

        await reading;
        var elapsed = watch.Elapsed;
        process.Refresh();
        var cpu = (process.TotalProcessorTime - cpuBefore).TotalMicroseconds / writes;
        await sending.DisposeAsync();
        await receiving.DisposeAsync();
        return (total / elapsed.TotalSeconds / 1e6, cpu);
    }
}
